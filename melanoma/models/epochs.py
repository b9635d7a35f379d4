"""Which epoch's weights a training keeps (``keep_epoch``), read from its history alone
(no Keras: the report and the job planner use it too).

    kept_epoch(history, "best")      # 1-based epoch of the best validation AUC
"""
from __future__ import annotations

import numpy as np

KEEP_EPOCH = ("last", "best")
FALL_WARNING = 0.05  # a fall of the validation AUC from its best to the last epoch worth a line


def kept_epoch(history: dict, keep: str) -> int:
    """The 1-based epoch whose weights ``keep`` ("last" | "best") keeps, from the history:
    "best" is the first epoch with the highest validation AUC (the last epoch when no
    validation AUC is defined)."""
    n = len(history.get("loss") or history.get("val_auc") or [])
    auc = [np.nan if v is None else float(v) for v in history.get("val_auc") or []]
    if keep == "last" or not auc or not np.isfinite(auc).any():
        return n
    return int(np.nanargmax(auc)) + 1


def fall_warning(history: dict, keep: str, label: str = "") -> str:
    """One line when the validation AUC fell by >= ``FALL_WARNING`` from its best epoch to
    the last, saying which epoch is kept; "" otherwise."""
    auc = [np.nan if v is None else float(v) for v in history.get("val_auc") or []]
    if len(auc) < 2 or not np.isfinite(auc).any() or not np.isfinite(auc[-1]):
        return ""
    best = int(np.nanargmax(auc))
    if auc[best] - auc[-1] < FALL_WARNING:
        return ""
    kept = kept_epoch(history, keep)
    other = "" if keep == "best" else '; "best" keeps the best epoch'
    return (f"{label}: validation AUC fell from {auc[best]:.3f} (epoch {best + 1}) to "
            f"{auc[-1]:.3f} (epoch {len(auc)}); keeping epoch {kept} (keep_epoch = "
            f'"{keep}"{other})')
