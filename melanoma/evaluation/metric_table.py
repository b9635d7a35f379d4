"""Every metric declared once: its name, label, direction and what it needs.

The metric functions (``metrics``), the results rows (``rows``), the markdown and HTML
tables, and the regression gate's directions are all derived from ``METRICS``: adding a
metric is one line here plus its computation in ``metrics``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One metric: ``needs`` the classes it is undefined without ("pos", "neg", "both" or
    ""), ``operating_point`` whether it depends on a threshold (argmax or the validation
    one), ``higher_is_better`` (None for counts, compared exactly)."""

    name: str
    label: str
    higher_is_better: bool | None
    needs: str = ""
    operating_point: bool = False


METRICS = (
    MetricSpec("accuracy", "accuracy", True, "", True),
    MetricSpec("auc", "AUC", True, "both"),
    MetricSpec("sensitivity", "sens", True, "pos", True),
    MetricSpec("specificity", "spec", True, "neg", True),
    MetricSpec("balanced_accuracy", "bal. acc", True, "both", True),
    MetricSpec("f1", "F1", True, "pos", True),
    MetricSpec("average_precision", "AP", True, "pos"),
    MetricSpec("sens_at_spec90", "sens@spec90", True, "both"),
    MetricSpec("sens_at_spec95", "sens@spec95", True, "both"),
    MetricSpec("pauc_sens80", "pAUC>80%sens", True, "both"),
    MetricSpec("brier", "Brier", False),
    MetricSpec("ece", "ECE", False),
    MetricSpec("n", "n", None),
    MetricSpec("n_pos", "n malignant", None),
    MetricSpec("n_neg", "n benign", None),
)
BY_NAME = {m.name: m for m in METRICS}

ALL_NAMES = tuple(m.name for m in METRICS)
COUNTS = tuple(m.name for m in METRICS if m.higher_is_better is None)
SCORED = tuple(m.name for m in METRICS if m.higher_is_better is not None)
AT_OPERATING_POINT = tuple(m.name for m in METRICS if m.operating_point)
THRESHOLD_FREE = tuple(m.name for m in METRICS if m.higher_is_better is not None
                       and not m.operating_point)
LOWER_IS_BETTER = frozenset(m.name for m in METRICS if m.higher_is_better is False)


def needing(kind: str) -> tuple[str, ...]:
    """Metrics undefined without malignant ("pos"), benign ("neg") or either ("both") cases."""
    return tuple(m.name for m in METRICS if m.needs == kind)


def is_finite(value) -> bool:
    """A real number that is not NaN or infinite (bools and strings are not numbers here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


THRESHOLD_PREFIX = "thr_"  # results columns at the validation-chosen threshold


def number_text(value, digits: int = 4) -> str:
    """A table cell's number: ``digits`` decimals, "n/a" when missing or not finite."""
    return f"{value:.{digits}f}" if is_finite(value) else "n/a"


def with_ci_text(row: dict, key: str) -> str:
    """``row[key]`` (4 decimals) and its ``[low, high]`` interval (3) when both ends exist."""
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    ci = f" [{number_text(low, 3)}, {number_text(high, 3)}]" \
        if is_finite(low) and is_finite(high) else ""
    return number_text(row.get(key)) + ci


def column_label(key: str) -> str:
    """The header of a results column: ``sens @argmax``, ``sens @thr``, ``AUC``."""
    if key.startswith(THRESHOLD_PREFIX):
        return f"{BY_NAME[key.removeprefix(THRESHOLD_PREFIX)].label} @thr"
    spec = BY_NAME[key]
    return f"{spec.label} @argmax" if spec.operating_point else spec.label


def headline_keys() -> tuple[str, ...]:
    """Metric columns in table order: AUC, the argmax trio, the threshold trio, the rest."""
    trio = ("accuracy", "sensitivity", "specificity")
    first = ("auc", *trio, *(THRESHOLD_PREFIX + k for k in trio))
    return first + tuple(k for k in SCORED if k not in first)


# The short table (terminal, results.md, the page's first table): ranking, the operating
# point and calibration. The operating-point metrics are read at the validation threshold.
COMPACT = ("auc", "sensitivity", "specificity", "ece")


def compact_keys(at_threshold: bool = True) -> tuple[str, ...]:
    """The short table's metric columns: AUC, sensitivity and specificity at the validation
    threshold (at argmax when ``at_threshold`` is False: no row has a threshold) and ECE."""
    return tuple(THRESHOLD_PREFIX + k if at_threshold and BY_NAME[k].operating_point else k
                 for k in COMPACT)
