"""Duplicate pairs among audit items: identical bytes, or perceptual hashes within a
Hamming distance (exhaustive, blocked BLAS), and the convenience entry points."""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from melanoma.evaluation.audit.hashing import (
    _DTYPES,
    _SPLIT_RANK,
    PAIR_COLUMNS,
    SPLITS,
    AuditItem,
    HashTable,
    hash_items,
)
from melanoma.evaluation.audit.summary import summarise

# --------------------------------------------------------------------------
# pair search


def hamming_pairs(
    bits: np.ndarray,
    max_distance: int,
    *,
    query_bits: np.ndarray | None = None,
    block_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with Hamming(query_bits[i], bits[j]) <= max_distance.

    ``bits`` is an (N, n_bits) bool array; ``query_bits`` (default ``bits``)
    lets the rows be transformed versions of the same N hashes.  Returns
    (i, j, distance) int64 arrays.  Row blocks of ``block_size`` against the
    columns to their right through one float32 matmul each: O(N^2 * n_bits / 2)
    time, O(block_size * N) memory.
    """
    bits = np.asarray(bits, dtype=bool)
    query = bits if query_bits is None else np.asarray(query_bits, dtype=bool)
    n, n_bits = bits.shape
    if query.shape != bits.shape:
        raise ValueError("query_bits must have the same shape as bits")
    cols = np.where(bits, np.float32(1), np.float32(-1))
    rows = cols if query_bits is None else np.where(query, np.float32(1), np.float32(-1))
    threshold = n_bits - 2 * max_distance  # S = n_bits - 2*d  >=  threshold
    out_i, out_j, out_d = [], [], []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        sim = rows[start:stop] @ cols[start:].T  # (block, n - start)
        bi, bj = np.nonzero(sim >= threshold - 0.5)
        keep = bj > bi  # both local to `start`: strict upper triangle
        bi, bj = bi[keep], bj[keep]
        dist = np.rint((n_bits - sim[bi, bj]) / 2).astype(np.int64)
        out_i.append(bi + start)
        out_j.append(bj + start)
        out_d.append(dist)
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
            np.concatenate(out_d))


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=_DTYPES[c]) for c in PAIR_COLUMNS})


def _exact_pairs(table: HashTable) -> dict[tuple[int, int], tuple[str, int, str]]:
    """Pairs of rows with identical bytes."""
    found: dict[tuple[int, int], tuple[str, int, str]] = {}
    groups: dict[str, list[int]] = {}
    for k, sha in enumerate(table.sha256):
        groups.setdefault(sha, []).append(k)
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            found[(a, b)] = ("exact", 0, "none")
    return found


def _near_pairs(table: HashTable, max_distance: int, block_size: int
                ) -> dict[tuple[int, int], tuple[str, int, str]]:
    """Pairs whose perceptual hashes are within ``max_distance`` under identity (and flips),
    each with its smallest distance and the transform that gave it."""
    best: dict[tuple[int, int], tuple[int, int]] = {}  # (a, b) -> (distance, transform idx)
    ident = table.bits[:, 0, :]
    searches = [(0, ident, None)]
    for t_idx in range(1, table.bits.shape[1]):
        flipped = table.bits[:, t_idx, :]
        searches.append((t_idx, ident, flipped))  # d(T a, b) for a < b
        searches.append((t_idx, flipped, ident))  # d(a, T b) for a < b
    for t_idx, cols, rows in searches:
        ii, jj, dd = hamming_pairs(cols, max_distance, query_bits=rows, block_size=block_size)
        for a, b, d in zip(ii.tolist(), jj.tolist(), dd.tolist()):
            prev = best.get((a, b))
            if prev is None or d < prev[0]:
                best[(a, b)] = (d, t_idx)
    return {key: ("near", d, table.transforms[t_idx]) for key, (d, t_idx) in best.items()}


def find_duplicates(
    items: Sequence[Any],
    max_distance: int = 12,
    *,
    include_flips: bool = False,
    method: str = "average",
    hash_size: int = 16,
    block_size: int = 1024,
    workers: int | None = None,
    table: HashTable | None = None,
) -> pd.DataFrame:
    """Exact and near-duplicate pairs among ``items`` (within and across splits).

    Returns one row per unordered pair with columns :data:`PAIR_COLUMNS`:
    file_a, split_a, label_a, file_b, split_b, label_b, kind ('exact' | 'near'),
    distance (Hamming bits; 0 for exact), cross_split, label_conflict,
    flip ('none' unless include_flips matched a flipped copy).
    Sorted: cross-split first, then by distance, kind, files.
    Metadata in ``.attrs``: unreadable (paths), test_files (all test paths),
    n_items, max_distance, method, hash_size, include_flips.
    ``table`` reuses precomputed :func:`hash_items` output.
    """
    items = list(items)
    for it in items:
        if it.split not in _SPLIT_RANK:
            raise ValueError(f"unknown split {it.split!r} for {it.path} (expected one of {SPLITS})")
    if table is None:
        table = hash_items(items, size=hash_size, method=method,
                           include_flips=include_flips, workers=workers)

    found = _exact_pairs(table)
    for key, value in _near_pairs(table, max_distance, block_size).items():
        found.setdefault(key, value)
    pairs = _pairs_frame(items, table, found)
    pairs.attrs.update(
        unreadable=[str(items[k].path) for k in table.unreadable],
        test_files=[str(it.path) for it in items if it.split == "test"],
        n_items=len(items),
        max_distance=int(max_distance),
        method=table.method,
        hash_size=int(table.size),
        include_flips=len(table.transforms) > 1,
    )
    return pairs


def _pairs_frame(items, table: HashTable, found: dict) -> pd.DataFrame:
    if not found:
        return _empty_pairs()
    rows = []
    for (ra, rb), (kind, dist, flip) in found.items():
        a, b = items[table.index[ra]], items[table.index[rb]]
        if (_SPLIT_RANK[a.split], str(a.path)) > (_SPLIT_RANK[b.split], str(b.path)):
            a, b = b, a
        rows.append((str(a.path), a.split, int(a.label), str(b.path), b.split, int(b.label),
                     kind, int(dist), a.split != b.split, int(a.label) != int(b.label), flip))
    df = pd.DataFrame(rows, columns=list(PAIR_COLUMNS)).astype(_DTYPES)
    df = df.sort_values(["cross_split", "distance", "kind", "file_a", "file_b"],
                        ascending=[False, True, True, True, True], kind="stable")
    return df.reset_index(drop=True)


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``audit_pairs.csv`` back with the dtypes :func:`find_duplicates` uses."""
    df = pd.read_csv(path, keep_default_na=False)
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
                      include_flips: bool = False, workers: int | None = None) -> tuple[list[AuditItem], HashTable]:
    """Items of a data set found by :func:`melanoma.data.layout.discover`, with the runner's split.

    ``train/`` is split into train and val exactly as ``melanoma-bench run`` does
    (:func:`melanoma.data.pipeline.split_train_val` over the readable training images, stratified,
    seeded), so the audit's "val" is the run's validation split for the same config. Returns
    the items and their hashes (reused by :func:`find_duplicates` via ``table=``).
    """
    from melanoma.data.pipeline import split_train_val

    n_train = len(found.train)
    items = [AuditItem(pathlib.Path(f), "train", int(label))
             for f, label in zip(found.train.files, found.train.labels)]
    items += [AuditItem(pathlib.Path(f), "test", int(label))
              for f, label in zip(found.test.files, found.test.labels)]
    table = hash_items(items, include_flips=include_flips, workers=workers)
    bad = set(table.unreadable)
    readable = np.array([k for k in range(n_train) if k not in bad], dtype=np.int64)
    labels = np.array([items[k].label for k in readable], dtype=np.int64)
    if len(readable) and min(np.bincount(labels, minlength=2)) >= 2:
        _, val_index = split_train_val(labels, val_fraction, seed)
        for k in readable[val_index]:
            items[k] = dataclasses.replace(items[k], split="val")
    return items, table


def run_audit(
    items: Sequence[Any],
    out_dir: str | os.PathLike,
    max_distance: int = 12,
    *,
    include_flips: bool = False,
    max_grid: int = 16,
    **kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """find_duplicates + summarise + write_audit in one call (what the CLI runs)."""
    from melanoma.reporting.audit_figures import write_audit

    items = list(items)
    pairs = find_duplicates(items, max_distance, include_flips=include_flips, **kwargs)
    summary = summarise(pairs, items)
    write_audit(pairs, summary, out_dir, max_grid=max_grid)
    return pairs, summary
