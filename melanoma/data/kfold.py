"""k-fold cross-validation of the training folder: seeded, stratified folds, grouped by
lesion/patient id when the data folder's manifest names one (never one lesion in two folds).

    numbers = fold_numbers(labels, group_ids, k=5, seed=cfg.seed)  # fold 1..k per train file
    train_rows, val_rows = fold_rows(numbers, kept_index, fold=2)   # rows of the decoded cache

Without group ids the folds are scikit-learn's ``StratifiedKFold(k, shuffle=True,
random_state=seed)``; with them ``StratifiedGroupKFold`` with the same arguments (rows whose
group id is empty are groups of their own). The same labels, ids, k and seed always give
the same folds. See docs/cross_validation.md.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from melanoma.data.layout import CLASS_NAMES
from melanoma.util.errors import UserError


def enabled(k: int | None) -> bool:
    """Whether ``data.cv_folds`` asks for cross-validation (None and 1: the single split)."""
    return k is not None and k >= 2


def _grouped(group_ids) -> bool:
    return group_ids is not None and bool(np.any(np.asarray(group_ids, dtype=object) != ""))


def _groups(group_ids) -> np.ndarray:
    """Group ids with every empty one replaced by a unique id of its own."""
    out = np.asarray(group_ids, dtype=object).copy()
    empty = np.nonzero(out == "")[0]
    out[empty] = [f"\0row{i}" for i in empty]
    return out


def check_folds(labels, group_ids, k: int) -> None:
    """A UserError (one line) unless every class has at least ``k`` images (``k`` lesions when
    grouped) in the training folder, so each fold's validation part can hold both classes."""
    labels = np.asarray(labels, np.int64)
    grouped = _grouped(group_ids)
    groups = _groups(group_ids) if grouped else None
    for label, name in enumerate(CLASS_NAMES):
        mine = labels == label
        count = len(set(groups[mine].tolist())) if grouped else int(mine.sum())
        if count < k:
            unit = "lesions/patients" if grouped else "images"
            way_out = f"use cv_folds <= {count}" if count >= 2 else "use more data"
            raise UserError(f"data.cv_folds = {k} needs at least {k} {name.capitalize()} "
                            f"{unit} in train/, found {count}: {way_out}")


def fold_numbers(labels, group_ids, k: int, seed: int) -> np.ndarray:
    """The fold (1..k) of each training row: stratified by label, grouped by ``group_ids``
    (strings, "" = none) when any is given; deterministic from ``seed``."""
    labels = np.asarray(labels, np.int64)
    check_folds(labels, group_ids, k)
    if _grouped(group_ids):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels, _groups(group_ids))
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels)
    numbers = np.zeros(len(labels), np.int64)
    for fold, (_, held) in enumerate(parts, 1):
        numbers[held] = fold
    return numbers


def fold_rows(numbers: np.ndarray, kept_index: np.ndarray, fold: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of the decoded cache for ``fold``: row i holds input
    file ``kept_index[i]`` (unreadable files are not in the cache)."""
    of_row = np.asarray(numbers)[np.asarray(kept_index, np.int64)]
    rows = np.arange(len(of_row))
    return rows[of_row != fold], rows[of_row == fold]


def fingerprint(numbers: np.ndarray) -> str:
    """A short hash of a fold assignment (part of each fold model's cache key)."""
    import hashlib

    return hashlib.sha256(np.asarray(numbers, np.int64).tobytes()).hexdigest()[:16]
