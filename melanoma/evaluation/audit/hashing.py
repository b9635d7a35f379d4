"""Audit items and their hashes: file content (SHA-256) and perceptual (average or
difference) hashes, optionally of flipped copies."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

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
