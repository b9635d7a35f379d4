"""Decode and resize image files into one cached uint8 array (PIL, like Keras' old loader).

PIL decodes and resizes exactly as ``flow_from_directory``/``load_img`` did (grayscale,
RGBA, PNG and CMYK become RGB; ``nearest`` by default), so models trained with the
original pipeline see the same pixels. Unreadable files are skipped and reported.
"""
from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from melanoma.util.names import printable

log = logging.getLogger(__name__)
MAX_PIXELS = 50_000_000  # larger images are refused from their header, before decoding

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class LoadedImages:
    """Decoded images (N, H, W, 3) uint8 with their labels and files; what was skipped."""

    pixels: np.ndarray
    labels: np.ndarray
    files: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...]  # (file, reason)


def load_image(path: Path, size: int, interpolation: str = "nearest") -> np.ndarray:
    """One file as a (size, size, 3) uint8 array, decoded and resized like ``load_img``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ValueError(f"{img.size[0]}x{img.size[1]} pixels is over the limit "
                                 f"of {MAX_PIXELS:,} (not decoded)")
            if img.mode != "RGB":
                img = _to_rgb(img)
            if img.size != (size, size):
                img = img.resize((size, size), INTERPOLATIONS[interpolation])
            return np.asarray(img, dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any mode PIL opens: 16-bit grey scaled to 8 bits (PIL's own conversion clips
    every value over 255 to white); 32-bit integer and float images, whose range the file
    does not say, are refused by name (skipped and counted)."""
    if img.mode.startswith("I;16"):
        wide = np.asarray(img, dtype=np.uint16).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("I", "F"):
        raise ValueError(f"{'32-bit integer' if img.mode == 'I' else 'floating-point'} "
                         f"pixels (mode {img.mode}) have no known range: not decoded")
    return img.convert("RGB")


def _try_load(path: Path, size: int, interpolation: str):
    try:
        return load_image(path, size, interpolation), None
    except Exception as error:  # noqa: BLE001 - any decoding failure means "skip this file"
        return None, f"{type(error).__name__}: {error}".splitlines()[0][:200]


def load_images(files, labels, size: int, interpolation: str = "nearest",
                workers: int = 4) -> LoadedImages:
    """Decode ``files`` in parallel threads; unreadable ones are skipped with a warning."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; known: {sorted(INTERPOLATIONS)}")
    files = [Path(f) for f in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda f: _try_load(f, size, interpolation), files))
    kept, kept_labels, kept_files, skipped = [], [], [], []
    for path, label, (pixels, error) in zip(files, labels, results):
        if error is None:
            kept.append(pixels)
            kept_labels.append(label)
            kept_files.append(path)
        else:
            skipped.append((printable(path), error))
            log.warning("warning: skipped unreadable image %s (%s)", printable(path), error)
    array = np.stack(kept) if kept else np.zeros((0, size, size, 3), np.uint8)
    return LoadedImages(array, np.asarray(kept_labels, np.int64), tuple(kept_files), tuple(skipped))
