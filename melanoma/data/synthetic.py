"""Deterministic, dermoscopy-like synthetic data set in the public Kaggle layout.

Used whenever no data directory is given (``melanoma-bench run`` with no ``--data-dir``).
Each image is a skin-toned field with a lesion. A latent "malignancy" score, drawn from
overlapping class distributions, drives the lesion's diameter, asymmetry, border
irregularity and colour variegation; independent noise on every feature keeps the task
learnable but not trivial (the latent alone separates the classes with AUC ~0.98).
Same parameters and seed -> byte-identical JPEG files.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from melanoma.util import atomic
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)
CLASS_DIRS = ("Benign", "Malignant")
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: images per class and split, side in pixels, seed."""

    n_train_per_class: int = 200
    n_test_per_class: int = 100
    image_size: int = 96
    seed: int = 1234
    class_separation: float = 3.0  # distance of the latent score's class means, in SDs
    jpeg_quality: int = 92

    def key(self) -> str:
        """Short hash naming the cache folder of this spec."""
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: a cells x cells grid upsampled bicubically."""
    grid = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    field = np.asarray(img, dtype=np.float32)
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-6)


def _lesion_mask(rng, size, radius, asymmetry, irregularity):
    """Soft lesion mask: a polar radius with an off-centre bulge and a wobbly border."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = size / 2 + rng.normal(0, size * 0.05)
    cy = size / 2 + rng.normal(0, size * 0.05)
    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(xx - cx, yy - cy)
    r = 1.0 + asymmetry * np.cos(theta - rng.uniform(0, 2 * np.pi))
    for k in range(2, 9):
        amp = irregularity * rng.normal(0, 1) / k**0.7
        r = r + amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge = np.clip(radius * r, radius * 0.3, None)
    softness = 1.0 + 2.0 * (1 - irregularity)
    return 1.0 / (1.0 + np.exp((dist - edge) / softness))


def _render(rng: np.random.Generator, size: int, score: float, with_mask: bool = False):
    """One RGB uint8 image for a latent malignancy score (higher = more malignant-looking);
    with ``with_mask``, (image, soft lesion mask (size, size) float32 in [0, 1])."""
    def feature(mean, slope, noise):
        return mean + slope * score + rng.normal(0, noise)

    skin = np.array([225, 180, 150], np.float32) * rng.uniform(0.85, 1.05, 3)
    shade = 0.9 + 0.15 * _smooth_noise(rng, size, 3)[..., None]
    image = skin * shade
    radius = size * np.clip(feature(0.22, 0.04, 0.04), 0.08, 0.42)
    asymmetry = np.clip(feature(0.10, 0.06, 0.06), 0.0, 0.45)
    irregularity = np.clip(feature(0.10, 0.07, 0.06), 0.0, 0.5)
    variegation = np.clip(feature(0.25, 0.18, 0.15), 0.0, 1.0)
    mask = _lesion_mask(rng, size, radius, asymmetry, irregularity)[..., None]
    brown = np.array([150, 95, 60], np.float32) * rng.uniform(0.8, 1.15)
    palette = np.array([[60, 35, 25], [95, 90, 120], [170, 70, 60]], np.float32)
    lesion = np.broadcast_to(brown, image.shape).copy()
    for colour in palette:
        weight = variegation * np.clip(2.2 * _smooth_noise(rng, size, 6) - 1.0, 0, 1)[..., None]
        lesion = lesion * (1 - weight) + colour * weight
    image = image * (1 - mask) + lesion * mask
    for _ in range(rng.poisson(1.5)):  # hairs
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        t = np.linspace(0, 1, size * 2)
        xs = np.clip((x0 + (x1 - x0) * t).astype(int), 0, size - 1)
        ys = np.clip((y0 + (y1 - y0) * t).astype(int), 0, size - 1)
        image[ys, xs] = image[ys, xs] * 0.4
    yy, xx = np.mgrid[0:size, 0:size]
    vignette = np.hypot(xx - size / 2, yy - size / 2) / (size * 0.72)
    image = image * np.clip(1.15 - vignette**4, 0.15, 1.0)[..., None]
    image = image + rng.normal(0, 6, image.shape)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return (pixels, mask[..., 0].astype(np.float32)) if with_mask else pixels


PARALLEL_FROM = 400  # images: below this, worker start-up costs more than it saves


def _write_file(folder: Path, spec: SyntheticSpec, split: str, label: int, index: int) -> None:
    pixels = render_one(spec, split, label, index)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=spec.jpeg_quality)
    (folder / f"{CLASS_DIRS[label].lower()}_{index:05d}.jpg").write_bytes(buffer.getvalue())


def _write_chunk(root: str, spec: SyntheticSpec, jobs: list[tuple[str, int, int]]) -> None:
    for split, label, index in jobs:
        _write_file(Path(root) / split / CLASS_DIRS[label], spec, split, label, index)


def _write_all(root: Path, spec: SyntheticSpec) -> None:
    """Render and save both splits. Each image has its own seed, so files are independent
    and the same whether written here or by worker processes (large sets: one per core,
    started fresh, not forked from a process that may hold a backend's threads)."""
    jobs = [(split, label, i) for split, n in (("train", spec.n_train_per_class),
                                               ("test", spec.n_test_per_class))
            for label in range(len(CLASS_DIRS)) for i in range(n)]
    for split in ("train", "test"):
        for class_dir in CLASS_DIRS:
            (root / split / class_dir).mkdir(parents=True, exist_ok=True)
    workers = min(os.cpu_count() or 1, 16)
    if len(jobs) < PARALLEL_FROM or workers < 2:
        _write_chunk(str(root), spec, jobs)
        return
    log.info("generating %d images of %d px on %d processes", len(jobs), spec.image_size, workers)
    chunks = [jobs[i::workers * 4] for i in range(workers * 4)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for future in [pool.submit(_write_chunk, str(root), spec, chunk) for chunk in chunks]:
            future.result()


def render_one(spec: SyntheticSpec, split: str, label: int, index: int, with_mask=False):
    """Image ``index`` of class ``label`` in ``split`` (its own seed); with ``with_mask``,
    (image, soft lesion mask): the ground truth of where the lesion is, from the same draws."""
    rng = np.random.default_rng([spec.seed, hash_split(split), label, index])
    score = rng.normal((label - 0.5) * spec.class_separation, 1.0)
    return _render(rng, spec.image_size, score, with_mask)


def lesion_mask(spec: SyntheticSpec, file: str) -> np.ndarray:
    """The soft lesion mask (image_size, image_size) float32 in [0, 1] of a generated file,
    named relative to the data set's root (``test/Malignant/malignant_00003.jpg``)."""
    parts = Path(file).parts
    match = len(parts) == 3 and re.fullmatch(r"(benign|malignant)_(\d+)\.jpg", parts[2])
    if not match or parts[1].lower() != match.group(1):
        raise UserError(f"{file!r} is not a generated file name (split/Class/class_00000.jpg)")
    label = CLASS_DIRS.index(parts[1].capitalize())
    return render_one(spec, parts[0], label, int(match.group(2)), with_mask=True)[1]


def hash_split(split: str) -> int:
    """A stable integer per split name (Python's hash() is salted per process)."""
    return int(hashlib.md5(split.encode()).hexdigest()[:8], 16)


def default_cache_dir() -> Path:
    """Where generated data sets live: $MELANOMA_DATA_CACHE or ~/.cache/melanoma-bench."""
    env = os.environ.get("MELANOMA_DATA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "melanoma-bench"


def generate(out_dir: Path, spec: SyntheticSpec) -> Path:
    """Write the data set to ``out_dir`` (train/ and test/ with Benign/ and Malignant/)."""
    out_dir = Path(out_dir)
    _write_all(out_dir, spec)
    (out_dir / "SPEC.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out_dir


def ensure_dataset(spec: SyntheticSpec, cache_dir: Path | None = None) -> Path:
    """Return the folder of ``spec``'s data set, generating it once (atomically) if absent."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / f"synthetic-{spec.key()}"
    if (target / "SPEC.json").exists():
        return target
    atomic.make_folder(cache_dir, "set MELANOMA_DATA_CACHE to a folder you can write")
    with atomic.place_errors(cache_dir, "write in the cache folder",
                             "set MELANOMA_DATA_CACHE to a folder you can write"):
        staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=cache_dir))
    try:
        generate(staging, spec)
        os.replace(staging, target)
    except OSError:
        if target.is_dir() and not (target / "SPEC.json").exists():
            raise UserError(f"{target} is an incomplete synthetic data set (no SPEC.json): "
                            f"delete that folder and run again") from None
        if not (target / "SPEC.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
