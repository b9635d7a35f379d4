"""The audit's summary counts and the clean test subset (no duplicate and no image of the same
lesion in train or val)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from melanoma.evaluation.audit.items import _SPLIT_RANK, KINDS, SPLITS, is_readable
from melanoma.util.names import printable

# --------------------------------------------------------------------------
# summary and clean subset


def _combo(split_a: str, split_b: str) -> str:
    return f"{split_a}-{split_b}"


def _pairs_by_split(pairs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{'train-test': {'exact': n, 'near': n, 'same_lesion': n}, ...} in split order."""
    by_split: dict[str, dict[str, int]] = {}
    for (sa, sb, kind), n in pairs.groupby(["split_a", "split_b", "kind"]).size().items():
        by_split.setdefault(_combo(sa, sb), dict.fromkeys(KINDS, 0))[kind] = int(n)
    return dict(sorted(by_split.items(), key=lambda kv: tuple(_SPLIT_RANK[s] for s in kv[0].split("-"))))


def summarise(
    pairs: pd.DataFrame,
    items: Sequence[Any],
    unreadable: Iterable[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """JSON-ready summary of the audit.

    Keys: n_items, n_by_split, n_unreadable, unreadable_files, pairs_total,
    pairs_by_split ({'train-test': {'exact': n, 'near': n, 'same_lesion': n}, ...}),
    cross_split_pairs, label_conflict_pairs, label_conflict_cross_split_pairs,
    n_test, test_with_duplicate_in_train, test_with_exact_duplicate_in_train,
    test_with_duplicate_in_val, test_with_duplicate_in_train_or_val (exact or near),
    test_with_same_lesion_in_train_or_val, test_fraction_affected (test images with a
    duplicate or the same lesion in train or val, of the readable test images),
    n_test_clean, plus the search settings when known.
    ``unreadable`` defaults to ``pairs.attrs['unreadable']``; when that is
    missing too (pairs read from CSV) the files are re-checked.
    """
    items = list(items)
    if unreadable is None:
        unreadable = pairs.attrs.get("unreadable")
    if unreadable is None:
        unreadable = [str(it.path) for it in items if not is_readable(it.path)]
    unreadable = sorted(str(p) for p in unreadable)
    bad = set(unreadable)

    n_by_split = {s: sum(1 for it in items if it.split == s) for s in SPLITS}
    test_files = {str(it.path) for it in items if it.split == "test"}
    n_test = len(test_files - bad)

    in_train = _contaminated(pairs, ("train",))
    in_val = _contaminated(pairs, ("val",))
    either = in_train | in_val
    lesion = _contaminated(pairs, ("train", "val"), kinds=("same_lesion",))
    summary = {
        "n_items": len(items),
        "n_by_split": n_by_split,
        "n_unreadable": len(unreadable),
        "unreadable_files": [printable(p) for p in unreadable],  # as named in every report
        "pairs_total": int(len(pairs)),
        "pairs_by_split": _pairs_by_split(pairs),
        "cross_split_pairs": int(pairs["cross_split"].sum()),
        "label_conflict_pairs": int(pairs["label_conflict"].sum()),
        "label_conflict_cross_split_pairs": int((pairs["label_conflict"] & pairs["cross_split"]).sum()),
        "n_test": n_test,
        "test_with_duplicate_in_train": len(in_train),
        "test_with_exact_duplicate_in_train": len(_contaminated(pairs, ("train",), kinds=("exact",))),
        "test_with_duplicate_in_val": len(in_val),
        "test_with_duplicate_in_train_or_val": len(either),
        "test_with_same_lesion_in_train_or_val": len(lesion),
        "test_fraction_affected": round(len(either | lesion) / n_test, 6) if n_test else 0.0,
        "n_test_clean": len(test_files - bad - either - lesion),
    }
    for key in ("min_corr", "include_flips", "n_grouped"):
        if key in pairs.attrs:
            summary[key] = pairs.attrs[key]
    return summary


def _contaminated(pairs: pd.DataFrame, sources: tuple[str, ...],
                  kinds: tuple[str, ...] = ("exact", "near")) -> set[str]:
    """Test files paired with an image from one of ``sources``."""
    sel = pairs["kind"].isin(kinds)
    out = set()
    # pairs are oriented train < val < test, so a test image is always file_b
    m = sel & (pairs["split_b"] == "test") & pairs["split_a"].isin(sources)
    out.update(pairs.loc[m, "file_b"].tolist())
    m = sel & (pairs["split_a"] == "test") & pairs["split_b"].isin(sources)
    out.update(pairs.loc[m, "file_a"].tolist())
    return out


def clean_test_files(pairs: pd.DataFrame, items: Sequence[Any] | None = None) -> set[str]:
    """Test paths (as str) with NO exact/near duplicate and no image of the same lesion or
    patient (kind 'same_lesion') in train or val.

    The universe of test files comes from ``items`` or, when omitted, from
    ``pairs.attrs['test_files']`` (set by :func:`find_duplicates`).
    Unreadable test files are excluded (they could not be checked).
    Test-test duplicates do not make an image unclean.
    """
    if items is not None:
        test = {str(it.path) for it in items if it.split == "test"}
    elif "test_files" in pairs.attrs:
        test = set(pairs.attrs["test_files"])
    else:
        raise ValueError("pass items (pairs.attrs has no 'test_files', e.g. read from CSV)")
    bad = set(pairs.attrs.get("unreadable", ()))
    return test - bad - _contaminated(pairs, ("train", "val"), kinds=KINDS)
