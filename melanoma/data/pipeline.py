"""tf.data pipelines over cached uint8 images.

cache (decoded, resized uint8, in memory) -> shuffle -> batch -> augmentation ->
preprocessing variant -> prefetch. Shuffling happens after the cache, so every epoch
gets a new (seeded) order; augmentation seeds come from a seeded stream, one per batch.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from melanoma.data.augmentation import Augmentation
from melanoma.data.preprocessing import Preprocessing


def split_train_val(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded indices (train, val) of the training folder (85/15 by default)."""
    indices = np.arange(len(labels))
    train, val = train_test_split(indices, test_size=val_fraction, stratify=labels,
                                  random_state=seed, shuffle=True)
    return np.sort(train), np.sort(val)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) 0/1 labels -> (N, 2) float32 one-hot (column 1 = malignant)."""
    return np.eye(2, dtype=np.float32)[np.asarray(labels, np.int64)]


class ArrayRows:
    """An in-memory uint8 array behind the decoded-image cache's row interface."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = np.asarray(pixels)
        self.image_size = int(self.pixels.shape[1]) if self.pixels.ndim == 4 else 0

    def read_rows(self, indices) -> np.ndarray:
        return self.pixels[np.asarray(indices, np.int64)]


def make_dataset(pixels: np.ndarray, labels: np.ndarray | None, batch_size: int,
                 preprocessing: Preprocessing, augmentation: Augmentation | None = None,
                 shuffle: bool = False, seed: int = 0, drop_remainder: bool = False):
    """Batches of preprocessed float32 images (and one-hot labels when given) from an array
    in memory: the streamed pipeline over rows of ``pixels`` (one implementation, so both
    give the same batches for the same seed)."""
    from melanoma.data.stream import make_stream_dataset

    return make_stream_dataset(ArrayRows(pixels), np.arange(len(pixels)), labels, batch_size,
                               preprocessing, augmentation, shuffle, seed, drop_remainder)
