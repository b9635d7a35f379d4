"""tf.data pipelines over cached uint8 images.

cache (decoded, resized uint8, in memory) -> shuffle -> batch -> augmentation ->
preprocessing variant -> prefetch. Shuffling happens after the cache, so every epoch
gets a new (seeded) order; augmentation seeds come from a seeded stream, one per batch.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from melanoma.data.augmentation import Augmentation, augment_batch
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


def make_dataset(pixels: np.ndarray, labels: np.ndarray | None, batch_size: int,
                 preprocessing: Preprocessing, augmentation: Augmentation | None = None,
                 shuffle: bool = False, seed: int = 0, drop_remainder: bool = False):
    """Batches of preprocessed float32 images (and one-hot labels when given)."""
    import tensorflow as tf

    images = tf.data.Dataset.from_tensor_slices(pixels)
    data = images if labels is None else tf.data.Dataset.zip(
        images, tf.data.Dataset.from_tensor_slices(one_hot(labels)))
    if shuffle:
        data = data.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    aug = augmentation if augmentation is not None and augmentation.active else None
    if aug is not None:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        data = tf.data.Dataset.zip(data, seeds)

    def transform(batch, batch_seed=None):
        x, y = (batch, None) if labels is None else batch
        x = tf.cast(x, tf.float32)
        if aug is not None:
            x = augment_batch(x, aug, batch_seed)
        x = preprocessing.apply(x)
        return x if y is None else (x, y)

    if aug is not None:
        data = data.map(lambda batch, s: transform(batch, s), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        # a labelled element (x, y) reaches map's function as two arguments
        data = data.map(lambda *batch: transform(batch if labels is not None else batch[0]),
                        num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)
