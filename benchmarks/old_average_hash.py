"""The leakage audit's previous detector, kept only as the reference that
``benchmarks/measure_audit.py`` compares the dermoscopy detector with (docs/duplicate_audit.md).

A 16x16 average hash (greyscale, LANCZOS resize, bit = pixel > mean) and a pair is flagged when
the hashes are within ``max_distance`` bits (12: the published leak analysis' setting); with
``include_flips`` also the hash of the other image flipped left-right, top-bottom or both.
Identical files hash identically, so exact copies are among the flagged pairs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FLIPS = (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180)


def average_hashes(path: Path, include_flips: bool, size: int = 16) -> np.ndarray | None:
    """(1 or 4, size*size) bool: the hash of the image (and of its flips); None if unreadable."""
    try:
        with Image.open(path) as im:
            grey = im.convert("L")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    views = [grey] + ([grey.transpose(t) for t in FLIPS] if include_flips else [])
    out = []
    for view in views:
        px = np.asarray(view.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
        out.append((px > px.mean()).reshape(-1))
    return np.stack(out)


def flagged_pairs(paths: list[Path], max_distance: int = 12, include_flips: bool = False
                  ) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose hashes are within ``max_distance`` bits (any flip of either)."""
    hashes = [average_hashes(p, include_flips) for p in paths]
    ok = [k for k, h in enumerate(hashes) if h is not None]
    if not ok:
        return set()
    bits = np.where(np.stack([hashes[k] for k in ok]), np.float32(1), np.float32(-1))  # (N, T, B)
    n_bits = bits.shape[2]
    found: set[tuple[int, int]] = set()
    for t in range(bits.shape[1]):  # sim = n_bits - 2 * hamming; flipping one side suffices
        sim = bits[:, t] @ bits[:, 0].T
        ii, jj = np.nonzero(sim >= n_bits - 2 * max_distance - 0.5)
        found.update((min(ok[i], ok[j]), max(ok[i], ok[j])) for i, j in zip(ii, jj) if i != j)
    return found
