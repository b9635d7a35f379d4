"""From a data folder to decoded train/val/test splits (no TensorFlow).

    found = layout.discover(resolve_data_dir(cfg, None))
    check_split_sizes(found, cfg)          # before any work: every split has both classes
    splits = load_splits(found, 64, cfg)   # decode, then the stratified, seeded 85/15 split
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma.data import layout, synthetic
from melanoma.data.decode import LoadedImages, load_images
from melanoma.data.pipeline import split_train_val
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """Decoded train/val/test images at one input size."""

    train: LoadedImages
    val: LoadedImages
    test: LoadedImages
    skipped: tuple[tuple[str, str], ...]


def resolve_data_dir(cfg, data_dir: Path | None) -> Path:
    """--data-dir, else the config's data.dir, else the generated synthetic set."""
    chosen = data_dir or cfg.data.dir
    if chosen:
        return Path(chosen).expanduser()
    spec = cfg.data.synthetic
    log.info("data: no --data-dir given; using the generated synthetic set (%d+%d images per "
             "class, %dpx, seed %d)", spec.n_train_per_class, spec.n_test_per_class,
             spec.image_size, spec.seed)
    return synthetic.ensure_dataset(spec)


def limited(found: layout.DataLayout, limit: int | None, seed: int = 0) -> layout.DataLayout:
    """At most ``limit`` files per class and split, a seeded sample kept in file order."""
    if limit is None:
        return found

    def cut(split: layout.Split) -> layout.Split:
        rng = np.random.default_rng(seed)
        keep = []
        for label in (0, 1):
            index = [i for i, value in enumerate(split.labels) if value == label]
            if len(index) > limit:
                index = rng.choice(index, size=limit, replace=False).tolist()
            keep += index
        keep.sort()
        return layout.Split(tuple(split.files[i] for i in keep),
                            tuple(split.labels[i] for i in keep))

    return layout.DataLayout(found.root, cut(found.train), cut(found.test))


def check_split_sizes(found: layout.DataLayout, val_fraction: float) -> None:
    """Fail before any work when the stratified validation split would lack a class or
    training would keep none (e.g. val_fraction 0.01 of 40 images, or 2 images a class)."""
    n = len(found.train)
    n_val = math.ceil(val_fraction * n)
    for label, name in enumerate(layout.CLASS_NAMES):
        count = found.train.count(label)
        expected_val = count * val_fraction
        if n_val < 2 or n - n_val < 2 or expected_val < 0.5 or count - expected_val < 0.5:
            raise UserError(
                f"data: val_fraction {val_fraction:g} of {n} training images ({count} "
                f"{name.capitalize()}) leaves a class without images in the training or "
                f"validation split; use more images or a val_fraction near 0.15")


def fingerprint(files) -> str:
    """Content hash of the data set's files (names relative to nothing: bytes and order)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(Path(path).name))  # non-UTF-8 names too
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def _subset(images: LoadedImages, index: np.ndarray) -> LoadedImages:
    return LoadedImages(images.pixels[index], images.labels[index],
                        tuple(images.files[i] for i in index), ())


def load_splits(found: layout.DataLayout, size: int, cfg) -> Splits:
    """Decode train and test at ``size`` and split train 85/15 (stratified, seeded)."""
    interpolation = cfg.data.interpolation
    train_all = load_images(found.train.files, found.train.labels, size, interpolation)
    test = load_images(found.test.files, found.test.labels, size, interpolation)
    for split_name, loaded in (("train", train_all), ("test", test)):
        if len(set(loaded.labels.tolist())) < 2:
            raise UserError(f"{split_name}/ has fewer than two readable classes after skipping "
                            f"{len(loaded.skipped)} unreadable files")
    try:
        train_index, val_index = split_train_val(train_all.labels, cfg.data.val_fraction, cfg.seed)
    except ValueError as error:  # unreadable files made a class too small to split
        raise UserError(f"data: cannot split train/ into train and validation: {error}") from None
    return Splits(_subset(train_all, train_index), _subset(train_all, val_index), test,
                  train_all.skipped + test.skipped)
