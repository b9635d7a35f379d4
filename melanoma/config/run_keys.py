"""Validators of the cross-validation and experiment-logging keys (``data.cv_folds``,
``mlflow``): ``check(value) -> error text or None``, attached with ``_checked``."""
from __future__ import annotations

import importlib.util


def cv_folds_check(value):
    """None or 1: the single train/val split; k >= 2: k-fold cross-validation of train/."""
    if value is None or (isinstance(value, int) and value >= 1):
        return None
    return "must be a whole number >= 2 (k folds; 1 or unset: the single train/val split)"


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def mlflow_check(value):
    """MLflow logging can be switched on only where the package is installed."""
    if value and not installed("mlflow"):
        return "needs the mlflow package, which is not installed (pip install mlflow)"
    return None
