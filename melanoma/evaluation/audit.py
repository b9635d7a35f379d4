"""Train/val/test leakage audit: exact and near-duplicate images across splits.

The public "Melanoma Skin Cancer Dataset of 10000 Images" (``train|test/
{Benign,Malignant}``, 300x300 JPEGs) leaks: roughly a quarter of its test
images have a near-duplicate in train (16x16 average hash, Hamming distance
<= 12).  Metrics measured on such a test set overstate generalisation, so the
benchmark reports them on the full test set *and* on the "clean" subset of
test images that have no duplicate in train or val.

Command line::

    melanoma-bench audit DATA_DIR [--out reports/audit] [--max-distance 12] [--include-flips]

Files are found by :mod:`melanoma.data.layout` (the one way this project finds images) and
``train/`` is split into train/val exactly as ``melanoma-bench run`` splits it.

Python::

    from melanoma.evaluation.audit import clean_test_files, find_duplicates, summarise, write_audit
    pairs = find_duplicates(items, max_distance=12)
    summary = summarise(pairs, items)
    write_audit(pairs, summary, "reports/audit")
    clean = clean_test_files(pairs, items)   # evaluate metrics on these too

``items`` is any sequence of objects with ``.path`` (path-like), ``.split``
(``'train' | 'val' | 'test'``) and ``.label`` (0 benign, 1 malignant)
attributes, e.g. :class:`AuditItem` or the data module's ``ImageRecord``.

How duplicates are defined
--------------------------
* ``kind='exact'``: identical file bytes (SHA-256 of the file content).
* ``kind='near'``: not byte-identical, but the perceptual hashes are within
  ``max_distance`` bits (Hamming distance).  The default hash is the 16x16
  *average hash* (256 bits): the image is converted to greyscale
  (``convert('L')``), resized to 16x16 with PIL's **LANCZOS** filter (the
  anti-aliasing filter ``imagehash.average_hash`` uses, so distances match the
  published leak analysis) and each bit is ``pixel > mean``.  A *difference
  hash* (``method='difference'``: resize to 17x16, bit = pixel brighter than
  its left neighbour) is available as an alternative.  Re-encoded (different
  JPEG quality) and rescaled copies stay within a few bits; unrelated images
  are ~128 bits apart (independent random hashes: binomial(256, 1/2), sd 8).
* **Flipped / mirrored copies are NOT duplicates by default.**  The average
  hash of a mirrored image is (up to rounding) the mirrored bit grid, which for
  a non-symmetric lesion is ~128 bits away from the original, so a left-right
  or top-bottom mirror of a training image is reported as unrelated.  The
  default reproduces the published 16x16 / <=12 analysis; it can UNDER-count
  leakage if a data set contains mirrored copies, so check once with
  ``include_flips=True``: every image is also hashed mirrored left-right,
  top-bottom and both (= rotated 180 degrees), and a pair is a near duplicate
  if any of these brings it within ``max_distance``.  The extra column
  ``flip`` names the closest one: ``'none' | 'lr' | 'tb' | 'lr+tb'``
  (``'none'`` wins ties; without the option it is always ``'none'``).
  (90-degree rotations are not searched.)
* Unreadable files (zero bytes, not an image, truncated) are skipped: they are
  in no pair, are listed in ``pairs.attrs['unreadable']`` and counted by
  :func:`summarise` (``n_unreadable``).  They are not "clean" either, because
  they could not be checked (nor evaluated).

Pairs are unordered and reported once, oriented so that ``split_a`` comes
first in train < val < test order (ties: by path), e.g. a train image and its
test copy always give ``split_a='train', split_b='test'``.  A group of k
copies gives all k*(k-1)/2 pairs.

Complexity
----------
Hashing is O(N) image decodes (threads, PIL releases the GIL).  Near pairs are
found exhaustively: bits are mapped to +-1 float32 so that
``S = A @ B.T = bits - 2 * hamming`` (exact in float32), and the upper triangle
of the N x N distance matrix is computed in row blocks of ``block_size``:
O(N^2 * bits / 2) multiply-adds through BLAS, O(block_size * N) memory
(1024 x 10,000 float32 = 40 MB), O(#pairs) output.  10,000 images (50M pairs)
take about a second on 2 CPU cores.  With ``include_flips`` the work is x7.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

import numpy as np
import pandas as pd
from PIL import Image

__all__ = [
    "AuditItem",
    "HashTable",
    "PAIR_COLUMNS",
    "SPLITS",
    "average_hash",
    "clean_test_files",
    "content_hash",
    "difference_hash",
    "find_duplicates",
    "hamming_pairs",
    "hash_items",
    "items_from_layout",
    "items_from_splits",
    "read_pairs",
    "run_audit",
    "summarise",
    "write_audit",
]

SPLITS = ("train", "val", "test")
_SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}
LABEL_NAMES = {0: "benign", 1: "malignant"}
TRANSFORMS = ("none", "lr", "tb", "lr+tb")
_TRANSPOSE = {
    "lr": Image.Transpose.FLIP_LEFT_RIGHT,
    "tb": Image.Transpose.FLIP_TOP_BOTTOM,
    "lr+tb": Image.Transpose.ROTATE_180,
}
HASH_RESAMPLE = Image.Resampling.LANCZOS
"""Resize filter used by both perceptual hashes (anti-aliased, as imagehash)."""

# Column order of the pairs table; ``flip`` is an extra, last column.
PAIR_COLUMNS = (
    "file_a", "split_a", "label_a",
    "file_b", "split_b", "label_b",
    "kind", "distance", "cross_split", "label_conflict", "flip",
)
_DTYPES = {
    "file_a": str, "split_a": str, "label_a": "int64",
    "file_b": str, "split_b": str, "label_b": "int64",
    "kind": str, "distance": "int64", "cross_split": bool,
    "label_conflict": bool, "flip": str,
}
# Errors PIL raises for files that are not (complete) images.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class AuditItem:
    """One image of the data set (same shape as the data module's ImageRecord)."""

    path: pathlib.Path
    split: str  # 'train' | 'val' | 'test'
    label: int  # 0 benign, 1 malignant


# --------------------------------------------------------------------------
# hashing


def content_hash(path: str | os.PathLike) -> str | None:
    """SHA-256 hex digest of the file bytes (exact duplicates); None if unreadable."""
    try:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _ahash_image(grey: Image.Image, size: int) -> np.ndarray:
    px = np.asarray(grey.resize((size, size), HASH_RESAMPLE), dtype=np.float64)
    return (px > px.mean()).reshape(-1)


def _dhash_image(grey: Image.Image, size: int) -> np.ndarray:
    px = np.asarray(grey.resize((size + 1, size), HASH_RESAMPLE), dtype=np.int16)
    return (px[:, 1:] > px[:, :-1]).reshape(-1)


_METHODS: dict[str, Callable[[Image.Image, int], np.ndarray]] = {
    "average": _ahash_image,
    "difference": _dhash_image,
}


def _open_grey(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # force a full decode: truncated files fail here
        return im.convert("L")


def _image_hash(path, size: int, method: str) -> np.ndarray | None:
    try:
        grey = _open_grey(pathlib.Path(path).read_bytes())
    except _IMAGE_ERRORS:
        return None
    return _METHODS[method](grey, size)


def average_hash(path: str | os.PathLike, size: int = 16) -> np.ndarray | None:
    """Average hash: bool array of ``size*size`` bits, or None if unreadable.

    greyscale -> LANCZOS resize to size x size -> bit = pixel > mean pixel.
    """
    return _image_hash(path, size, "average")


def difference_hash(path: str | os.PathLike, size: int = 16) -> np.ndarray | None:
    """Difference hash: bool array of ``size*size`` bits, or None if unreadable.

    greyscale -> LANCZOS resize to (size+1) x size -> bit = pixel > left neighbour.
    """
    return _image_hash(path, size, "difference")


@dataclasses.dataclass
class HashTable:
    """Hashes of the readable items (row k of ``bits`` belongs to ``items[index[k]]``).

    ``bits`` has shape (n_readable, n_transforms, n_bits); transform 0 is
    ``'none'``, the others follow ``transforms``.  ``unreadable`` holds the
    indices (into ``items``) of files that could not be read or decoded.
    """

    index: np.ndarray
    sha256: list[str]
    bits: np.ndarray
    unreadable: list[int]
    transforms: tuple[str, ...] = ("none",)
    method: str = "average"
    size: int = 16


def _hash_one(path, size: int, method: str, transforms: tuple[str, ...]):
    try:
        data = pathlib.Path(path).read_bytes()
        grey = _open_grey(data)
    except _IMAGE_ERRORS:
        return None
    fn = _METHODS[method]
    bits = [fn(grey if t == "none" else grey.transpose(_TRANSPOSE[t]), size) for t in transforms]
    return hashlib.sha256(data).hexdigest(), np.stack(bits)


def hash_items(
    items: Sequence[Any],
    *,
    size: int = 16,
    method: str = "average",
    include_flips: bool = False,
    workers: int | None = None,
) -> HashTable:
    """Content hash + perceptual hash(es) of every item; unreadable ones skipped."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    transforms = TRANSFORMS if include_flips else ("none",)
    workers = workers or min(8, os.cpu_count() or 1)
    paths = [it.path for it in items]
    job = lambda p: _hash_one(p, size, method, transforms)  # noqa: E731
    if workers > 1 and len(paths) > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(job, paths, chunksize=16))
    else:
        results = [job(p) for p in paths]
    index, shas, bits, unreadable = [], [], [], []
    for k, res in enumerate(results):
        if res is None:
            unreadable.append(k)
        else:
            index.append(k)
            shas.append(res[0])
            bits.append(res[1])
    n_bits = size * size
    arr = np.stack(bits) if bits else np.zeros((0, len(transforms), n_bits), dtype=bool)
    return HashTable(np.asarray(index, dtype=np.int64), shas, arr, unreadable, transforms, method, size)


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

    # exact: identical bytes
    found: dict[tuple[int, int], tuple[str, int, str]] = {}
    groups: dict[str, list[int]] = {}
    for k, sha in enumerate(table.sha256):
        groups.setdefault(sha, []).append(k)
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            found[(a, b)] = ("exact", 0, "none")

    # near: perceptual hash within max_distance under identity (and flips)
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
    for key, (d, t_idx) in best.items():
        if key not in found:
            found[key] = ("near", d, table.transforms[t_idx])

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
# summary and clean subset


def _combo(split_a: str, split_b: str) -> str:
    return f"{split_a}-{split_b}"


def _is_readable(path) -> bool:
    try:
        _open_grey(pathlib.Path(path).read_bytes())
        return True
    except _IMAGE_ERRORS:
        return False


def summarise(
    pairs: pd.DataFrame,
    items: Sequence[Any],
    unreadable: Iterable[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """JSON-ready summary of the audit.

    Keys: n_items, n_by_split, n_unreadable, unreadable_files, pairs_total,
    pairs_by_split ({'train-test': {'exact': n, 'near': n}, ...}),
    cross_split_pairs, label_conflict_pairs, label_conflict_cross_split_pairs,
    n_test, test_with_duplicate_in_train, test_with_duplicate_in_val,
    test_with_duplicate_in_train_or_val, test_fraction_affected (of readable
    test images), n_test_clean, plus the search settings when known.
    ``unreadable`` defaults to ``pairs.attrs['unreadable']``; when that is
    missing too (pairs read from CSV) the files are re-checked.
    """
    items = list(items)
    if unreadable is None:
        unreadable = pairs.attrs.get("unreadable")
    if unreadable is None:
        unreadable = [str(it.path) for it in items if not _is_readable(it.path)]
    unreadable = sorted(str(p) for p in unreadable)
    bad = set(unreadable)

    n_by_split = {s: sum(1 for it in items if it.split == s) for s in SPLITS}
    test_files = {str(it.path) for it in items if it.split == "test"}
    n_test = len(test_files - bad)

    by_split: dict[str, dict[str, int]] = {}
    for (sa, sb, kind), n in pairs.groupby(["split_a", "split_b", "kind"]).size().items():
        by_split.setdefault(_combo(sa, sb), {"exact": 0, "near": 0})[kind] = int(n)
    by_split = dict(sorted(by_split.items(), key=lambda kv: tuple(_SPLIT_RANK[s] for s in kv[0].split("-"))))

    in_train = _contaminated(pairs, ("train",))
    in_val = _contaminated(pairs, ("val",))
    either = in_train | in_val
    summary = {
        "n_items": len(items),
        "n_by_split": n_by_split,
        "n_unreadable": len(unreadable),
        "unreadable_files": unreadable,
        "pairs_total": int(len(pairs)),
        "pairs_by_split": by_split,
        "cross_split_pairs": int(pairs["cross_split"].sum()),
        "label_conflict_pairs": int(pairs["label_conflict"].sum()),
        "label_conflict_cross_split_pairs": int((pairs["label_conflict"] & pairs["cross_split"]).sum()),
        "n_test": n_test,
        "test_with_duplicate_in_train": len(in_train),
        "test_with_exact_duplicate_in_train": len(_contaminated(pairs, ("train",), kinds=("exact",))),
        "test_with_duplicate_in_val": len(in_val),
        "test_with_duplicate_in_train_or_val": len(either),
        "test_fraction_affected": round(len(either) / n_test, 6) if n_test else 0.0,
        "n_test_clean": len(test_files - bad - either),
    }
    for key in ("max_distance", "method", "hash_size", "include_flips"):
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
    """Test paths (as str) with NO exact/near duplicate in train or val.

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
    return test - bad - _contaminated(pairs, ("train", "val"))


# --------------------------------------------------------------------------
# outputs


def _atomic_write(path: pathlib.Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write via melanoma.util.atomic (temp file beside ``path``, then rename)."""
    from melanoma.util import atomic

    with atomic.atomic_open(path, "wb") as fh:
        write(fh)


def _thumb(path: str, size: int = 160) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im)
    except _IMAGE_ERRORS:
        return None


def _grid_figure(pairs: pd.DataFrame, max_grid: int):
    # Agg canvas attached explicitly: no pyplot, no global backend switch, no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # closest cross-split pairs first (pairs are sorted that way), then within-split
    shown = pairs.head(max_grid) if max_grid > 0 else pairs.head(0)
    if shown.empty:
        fig = Figure(figsize=(4, 2))
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        msg = "no duplicates found" if pairs.empty else f"{len(pairs)} pairs (grid disabled)"
        ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=14)
        FigureCanvasAgg(fig)
        return fig
    per_row = min(4, len(shown))
    n_rows = math.ceil(len(shown) / per_row)
    fig = Figure(figsize=(4.4 * per_row, 2.9 * n_rows + 0.4), layout="constrained")
    fig.suptitle(f"Closest duplicate pairs ({len(shown)} of {len(pairs)})")
    for k, row in enumerate(shown.itertuples(index=False)):
        r, c = divmod(k, per_row)
        for side in (0, 1):
            ax = fig.add_subplot(n_rows, 2 * per_row, r * 2 * per_row + 2 * c + side + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            path, split, label = ((row.file_a, row.split_a, row.label_a) if side == 0
                                  else (row.file_b, row.split_b, row.label_b))
            img = _thumb(path)
            if img is None:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
            else:
                ax.imshow(img)
            title = f"{split} / {LABEL_NAMES.get(int(label), label)}\n{pathlib.Path(path).name}"
            if side == 1:
                flag = " LABEL CONFLICT" if row.label_conflict else ""
                tf = "" if row.flip == "none" else f" flip={row.flip}"
                title = f"{row.kind} d={row.distance}{tf}{flag}\n" + title
                ax.title.set_color("red" if row.label_conflict else "black")
            else:
                title = "\n" + title
            ax.set_title(title, fontsize=7)
    FigureCanvasAgg(fig)
    return fig


def write_audit(
    pairs: pd.DataFrame,
    summary: dict[str, Any],
    out_dir: str | os.PathLike,
    max_grid: int = 16,
) -> dict[str, pathlib.Path]:
    """Write audit_pairs.csv, audit_summary.json and audit_pairs.png (atomically).

    The PNG shows up to ``max_grid`` pairs side by side, closest cross-split
    pairs first, titled with split, label, kind and distance (or says 'no
    duplicates found').  Returns {'csv': path, 'json': path, 'png': path}.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "audit_pairs.csv", "json": out / "audit_summary.json",
             "png": out / "audit_pairs.png"}

    csv_text = pairs[list(PAIR_COLUMNS)].to_csv(index=False)
    _atomic_write(paths["csv"], lambda fh: fh.write(csv_text.encode("utf-8")))
    json_text = json.dumps(summary, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(paths["json"], lambda fh: fh.write(json_text.encode("utf-8")))
    fig = _grid_figure(pairs, max_grid)
    _atomic_write(paths["png"], lambda fh: fig.savefig(fh, format="png", dpi=100))
    return paths


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (pathlib.Path, set, frozenset, tuple)):
        return str(obj) if isinstance(obj, pathlib.Path) else sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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
    items = list(items)
    pairs = find_duplicates(items, max_distance, include_flips=include_flips, **kwargs)
    summary = summarise(pairs, items)
    write_audit(pairs, summary, out_dir, max_grid=max_grid)
    return pairs, summary
