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
from sklearn.model_selection import train_test_split

from melanoma.data import layout, synthetic
from melanoma.data.cache import DecodedCache, content_fingerprint, file_sha256, open_layout
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)


def split_train_val(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded indices (train, val) of the training folder (85/15 by default)."""
    indices = np.arange(len(labels))
    train, val = train_test_split(indices, test_size=val_fraction, stratify=labels,
                                  random_state=seed, shuffle=True)
    return np.sort(train), np.sort(val)


@dataclass(frozen=True)
class CachedSplit:
    """Rows ``index`` of a decoded-image cache: a split that is read in batches from disk,
    never held in memory as a whole."""

    cache: DecodedCache
    index: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.cache.labels[self.index]

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.cache.files[i] for i in self.index)

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class Splits:
    """Train/val/test at one input size, backed by the decoded-image cache."""

    train: CachedSplit
    val: CachedSplit
    test: CachedSplit
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


def fingerprint(files, labels=None) -> str:
    """Content hash of the data set's files (names and bytes, in order) and, when given,
    their labels: the same bytes in other class folders are other data."""
    content = content_fingerprint(files)
    if labels is None:
        return content
    blob = content + "," + ",".join(str(int(v)) for v in labels)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def labelled_fingerprint(files, labels) -> str:
    """Hash of every file's (name, bytes, label), sorted: the same images in other class
    folders (relabelled) hash differently; where the data lie and the order do not count.
    A run records its train/ folder's in results.json (data.train_fingerprint)."""
    rows = []
    for path, label in zip(files, labels, strict=True):
        rows.append((os.fsencode(Path(path).name), file_sha256(path), int(label)))
    digest = hashlib.sha256()
    for name, content, label in sorted(rows):  # names hold no NUL; digests are 32 bytes
        digest.update(name + b"\0" + content + str(label).encode() + b"\n")
    return digest.hexdigest()[:16]


def load_splits(found: layout.DataLayout, size: int, cfg) -> Splits:
    """Train and test at ``size`` from the decoded-image cache (built on first use: every
    file decoded once with PIL, then shared by every variant, seed and later run), with
    train split 85/15 (stratified, seeded)."""
    train_all, test = open_layout(found, size, cfg.data.interpolation, cfg.data.cache_dir)
    for split_name, opened in (("train", train_all), ("test", test)):
        if len(set(opened.labels.tolist())) < 2:
            raise UserError(f"{split_name}/ has fewer than two readable classes after skipping "
                            f"{len(opened.skipped)} unreadable files")
    try:
        train_index, val_index = split_train_val(train_all.labels, cfg.data.val_fraction, cfg.seed)
    except ValueError as error:  # unreadable files made a class too small to split
        raise UserError(f"data: cannot split train/ into train and validation: {error}") from None
    return Splits(CachedSplit(train_all, train_index), CachedSplit(train_all, val_index),
                  CachedSplit(test, np.arange(len(test))), train_all.skipped + test.skipped)


def prepare(cfg, data_dir: Path | None = None) -> list:
    """Build (or open) the decoded-image caches a run of ``cfg`` will read, one per input
    size of the variants that train: e.g. on a CPU node before the GPU job."""
    found = limited(layout.discover(resolve_data_dir(cfg, data_dir)), cfg.data.limit)
    sizes = sorted({v.resolved_image_size() for v in cfg.variants if not v.model_file})
    opened = []
    for size in sizes:
        train, test = open_layout(found, size, cfg.data.interpolation, cfg.data.cache_dir)
        log.info("prepared %d px: %s (%d images), %s (%d images)", size, train.path, len(train),
                 test.path, len(test))
        opened += [train, test]
    return opened
