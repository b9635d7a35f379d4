"""Seeded, stratified train/val/test assignment that never puts one lesion (or patient) in two.

With group ids (HAM10000's lesion_id, ISIC 2020's patient_id) the held-out part is one fold of
scikit-learn's ``StratifiedGroupKFold`` with ``round(1 / fraction)`` folds, so its size is the
nearest 1/k to the fraction asked for (0.2 -> 1/5, 0.15 -> 1/7); without them it is
``train_test_split(stratify=labels)`` with the exact fraction. Rows with an empty group id are
groups of their own.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from melanoma.util.errors import UserError


def _groups(group_ids: np.ndarray) -> np.ndarray:
    """Group ids with every empty one replaced by a unique id of its own."""
    out = np.asarray(group_ids, dtype=object).copy()
    empty = np.nonzero(out == "")[0]
    out[empty] = [f"\0row{k}" for k in empty]
    return out


def held_out(labels: np.ndarray, group_ids: np.ndarray, fraction: float, seed: int,
             what: str) -> np.ndarray:
    """Boolean mask of the rows held out (about ``fraction`` of them), stratified by label,
    grouped by ``group_ids`` when any is given."""
    labels = np.asarray(labels)
    n = len(labels)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 2:
        raise UserError(f"cannot split off a {what} set: only {counts[0]} Benign and {counts[1]} "
                        "Malignant images (each class needs at least 2)")
    mask = np.zeros(n, dtype=bool)
    if not np.any(np.asarray(group_ids) != ""):
        _, held = train_test_split(np.arange(n), test_size=fraction, stratify=labels,
                                   random_state=seed, shuffle=True)
        mask[held] = True
        return mask
    groups = _groups(group_ids)
    k = max(2, round(1 / fraction))
    n_groups = len(set(groups))
    if n_groups < k:
        raise UserError(f"cannot split off a {what} set of {fraction:g}: only {n_groups} "
                        f"lesions/patients for {k} folds")
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(n), labels, groups))
    mask[held] = True
    return mask


def assign_splits(labels, group_ids, *, official_test=None, test_fraction: float = 0.2,
                  val_fraction: float = 0.0, seed: int = 0) -> np.ndarray:
    """'train' / 'val' / 'test' per row.

    ``official_test`` (bool mask) rows are the test set as given; otherwise ``test_fraction``
    of all rows is held out. ``val_fraction`` (of what remains for training) becomes 'val'.
    """
    labels = np.asarray(labels, dtype=np.int64)
    group_ids = np.asarray(group_ids, dtype=object)
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    split = np.full(len(labels), "train", dtype=object)
    if official_test is not None:
        split[np.asarray(official_test, dtype=bool)] = "test"
    elif test_fraction > 0:
        split[held_out(labels, group_ids, test_fraction, seed, "test")] = "test"
    if val_fraction > 0:
        pool = np.nonzero(split == "train")[0]
        val = held_out(labels[pool], group_ids[pool], val_fraction, seed + 1, "validation")
        split[pool[val]] = "val"
    return split


def groups_in_several_splits(split: np.ndarray, group_ids: np.ndarray) -> list[str]:
    """Non-empty group ids that occur in more than one split (sorted)."""
    seen: dict[str, set] = {}
    for s, g in zip(split, group_ids):
        if g != "":
            seen.setdefault(g, set()).add(s)
    return sorted(g for g, splits in seen.items() if len(splits) > 1)
