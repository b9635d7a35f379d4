"""tf.data batches streamed from the decoded-image cache (melanoma/data/cache.py).

row indices -> (seeded) shuffle -> batch -> read the batch's rows from the cache file ->
augmentation -> preprocessing -> prefetch. Only indices are shuffled and only batches in
flight hold pixels, so host memory does not grow with the data set. The shuffle, the
per-batch augmentation seeds and the transform are those of
``melanoma.data.pipeline.make_dataset``: for the same seed the batches are the same, value for
value (tests/test_cache.py checks it).
"""
from __future__ import annotations

import numpy as np

from melanoma.data.augmentation import Augmentation, augment_batch
from melanoma.data.pipeline import one_hot
from melanoma.data.preprocessing import Preprocessing


def make_stream_dataset(cache, indices, labels, batch_size: int, preprocessing: Preprocessing,
                        augmentation: Augmentation | None = None, shuffle: bool = False,
                        seed: int = 0, drop_remainder: bool = False, flip_axes: tuple = ()):
    """Batches of preprocessed float32 images of rows ``indices`` of ``cache`` (and one-hot
    ``labels``, aligned with ``indices``, when given). ``flip_axes``: axes of the uint8
    (B, H, W, C) batch to reverse before anything else (test-time flips: (2,) horizontal,
    (1,) vertical, (1, 2) both)."""
    import tensorflow as tf

    indices = np.asarray(indices, np.int64).reshape(-1)
    rows = tf.data.Dataset.from_tensor_slices(indices)
    data = rows if labels is None else tf.data.Dataset.zip(
        rows, tf.data.Dataset.from_tensor_slices(one_hot(labels)))
    if shuffle:
        data = data.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    aug = augmentation if augmentation is not None and augmentation.active else None
    if aug is not None:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        data = tf.data.Dataset.zip(data, seeds)
    size = cache.image_size

    def transform(batch, batch_seed=None):
        index, y = (batch, None) if labels is None else batch
        x = tf.numpy_function(cache.read_rows, [index], tf.uint8, stateful=False)
        x.set_shape([batch_size if drop_remainder else None, size, size, 3])
        if flip_axes:
            x = tf.reverse(x, axis=list(flip_axes))
        x = tf.cast(x, tf.float32)
        if aug is not None:
            x = augment_batch(x, aug, batch_seed)
        x = preprocessing.apply(x)
        return x if y is None else (x, y)

    if aug is not None:
        data = data.map(lambda batch, s: transform(batch, s), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(lambda *batch: transform(batch if labels is not None else batch[0]),
                        num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)
