"""Duplicate pairs among audit items, found by the dermoscopy detector
(:mod:`melanoma.evaluation.dedup`), plus the pairs of one lesion or patient across splits, and
the convenience entry points."""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from melanoma.evaluation import dedup
from melanoma.evaluation.audit.items import (
    _DTYPES,
    _SPLIT_RANK,
    PAIR_COLUMNS,
    SPLITS,
    AuditItem,
    content_hash,
)


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=_DTYPES[c]) for c in PAIR_COLUMNS})


def signatures_of(items: Sequence[Any], workers: int | None = None) -> dedup.Signatures:
    """The detector's per-image signatures of ``items`` (each file decoded once)."""
    paths = [str(it.path) for it in items]
    return dedup.compute_signatures(dedup.file_loader(paths), len(paths), workers=workers)


def _row(a, b, kind: str, corr: float, ssim: float, transform: str, groups: Mapping[str, str]):
    """One pairs-table row, oriented train < val < test (then by path)."""
    if (_SPLIT_RANK[a.split], str(a.path)) > (_SPLIT_RANK[b.split], str(b.path)):
        a, b = b, a
        transform = dedup.INVERSE.get(transform, transform)  # it maps file_a onto file_b
    ga, gb = groups.get(str(a.path)), groups.get(str(b.path))
    return (str(a.path), a.split, int(a.label), str(b.path), b.split, int(b.label), kind,
            corr, ssim, a.split != b.split, int(a.label) != int(b.label), transform,
            ga if ga is not None and ga == gb else "")


def _detected_rows(items, found: pd.DataFrame, groups) -> list[tuple]:
    """Rows of the detector's pairs: identical files are 'exact', everything else 'near'."""
    rows = []
    for r in found.itertuples(index=False):
        a, b = items[r.i], items[r.j]
        exact = r.kind == "identical" and content_hash(a.path) == content_hash(b.path)
        rows.append(_row(a, b, "exact" if exact else "near", float(r.bandpass_corr),
                         float(r.ssim), r.transform, groups))
    return rows


def _same_lesion_rows(items, groups: Mapping[str, str], skip: set[int],
                      found: set[tuple[int, int]]) -> list[tuple]:
    """Pairs of readable items of one lesion/patient in different splits that the detector
    did not flag (scores empty: the images were not compared as copies)."""
    members: dict[str, list[int]] = {}
    for k, it in enumerate(items):
        g = groups.get(str(it.path))
        if g is not None and k not in skip:
            members.setdefault(g, []).append(k)
    rows = []
    for ks in members.values():
        for i, j in itertools.combinations(ks, 2):
            if items[i].split != items[j].split and (i, j) not in found:
                rows.append(_row(items[i], items[j], "same_lesion", np.nan, np.nan, "none", groups))
    return rows


def find_duplicates(
    items: Sequence[Any],
    min_corr: float = dedup.MIN_CORR,
    *,
    include_flips: bool = False,
    groups: Mapping[str, str] | None = None,
    neighbours: int = dedup.NEIGHBOURS,
    workers: int | None = None,
    signatures: dedup.Signatures | None = None,
) -> pd.DataFrame:
    """Exact and near-duplicate pairs among ``items`` (within and across splits), and the
    pairs of one lesion/patient across splits.

    Returns one row per unordered pair with columns :data:`PAIR_COLUMNS`: file_a, split_a,
    label_a, file_b, split_b, label_b, kind ('exact': identical bytes | 'near': the detector's
    band-pass correlation >= ``min_corr`` | 'same_lesion': ``groups`` gives both the same id,
    they lie in different splits and the detector did not flag them), bandpass_corr and ssim
    (the detector's scores; 1.0 for identical pixels, NaN for same_lesion), cross_split,
    label_conflict, transform (maps file_a onto file_b: 'none' unless ``include_flips``; flips
    and 90-degree rotations), group (the shared id, '' if none).
    Sorted: cross-split first, then most similar, kind, files.
    ``groups``: {str(item.path): lesion or patient id} (:func:`~.items.groups_for`).
    Metadata in ``.attrs``: unreadable (paths), test_files (all test paths), n_items,
    min_corr, include_flips, n_grouped, n_candidates. ``signatures`` reuses
    :func:`signatures_of` output.
    """
    items = list(items)
    for it in items:
        if it.split not in _SPLIT_RANK:
            raise ValueError(f"unknown split {it.split!r} for {it.path} (expected one of {SPLITS})")
    groups = dict(groups or {})
    sig = signatures if signatures is not None else signatures_of(items, workers)
    found = dedup.find_duplicate_pairs(None, len(items), include_flips=include_flips,
                                       min_corr=min_corr, neighbours=neighbours, signatures=sig)
    rows = _detected_rows(items, found, groups)
    rows += _same_lesion_rows(items, groups, set(sig.unreadable), set(zip(found["i"], found["j"])))
    pairs = _pairs_frame(rows)
    pairs.attrs.update(
        unreadable=[str(items[k].path) for k in sig.unreadable],
        test_files=[str(it.path) for it in items if it.split == "test"],
        n_items=len(items), min_corr=float(min_corr), include_flips=bool(include_flips),
        n_grouped=sum(str(it.path) in groups for it in items),
        n_candidates=int(found.attrs.get("n_candidates", 0)),
    )
    return pairs


def _pairs_frame(rows: list[tuple]) -> pd.DataFrame:
    if not rows:
        return _empty_pairs()
    df = pd.DataFrame(rows, columns=list(PAIR_COLUMNS)).astype(_DTYPES)
    df = df.sort_values(["cross_split", "bandpass_corr", "kind", "file_a", "file_b"],
                        ascending=[False, False, True, True, True], kind="stable",
                        na_position="last")
    return df.reset_index(drop=True)


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``audit_pairs.csv`` back with the dtypes :func:`find_duplicates` uses."""
    df = pd.read_csv(path, keep_default_na=False, na_values={"bandpass_corr": [""], "ssim": [""]})
    if df.empty:
        return _empty_pairs()
    return df[list(PAIR_COLUMNS)].astype(_DTYPES)


# --------------------------------------------------------------------------
# convenience


def items_from_splits(train, val, test) -> list[AuditItem]:
    """Items from three (files, labels) pairs, e.g. the runner's decoded splits."""
    return [AuditItem(pathlib.Path(f), split, int(label))
            for split, (files, labels) in zip(SPLITS, (train, val, test))
            for f, label in zip(files, labels)]


def items_from_layout(found, val_fraction: float = 0.15, seed: int = 42, *,
                      workers: int | None = None) -> tuple[list[AuditItem], dedup.Signatures]:
    """Items of a data set found by :func:`melanoma.data.layout.discover`, with the runner's split.

    ``train/`` is split into train and val exactly as ``melanoma-bench run`` does
    (:func:`melanoma.data.splits.split_train_val` over the readable training images, stratified,
    seeded), so the audit's "val" is the run's validation split for the same config. Returns
    the items and their signatures (reused by :func:`find_duplicates` via ``signatures=``).
    """
    from melanoma.data.splits import split_train_val

    n_train = len(found.train)
    items = [AuditItem(pathlib.Path(f), "train", int(label))
             for f, label in zip(found.train.files, found.train.labels)]
    items += [AuditItem(pathlib.Path(f), "test", int(label))
              for f, label in zip(found.test.files, found.test.labels)]
    sig = signatures_of(items, workers)
    bad = set(sig.unreadable)
    readable = np.array([k for k in range(n_train) if k not in bad], dtype=np.int64)
    labels = np.array([items[k].label for k in readable], dtype=np.int64)
    if len(readable) and min(np.bincount(labels, minlength=2)) >= 2:
        _, val_index = split_train_val(labels, val_fraction, seed)
        for k in readable[val_index]:
            items[k] = dataclasses.replace(items[k], split="val")
    return items, sig
