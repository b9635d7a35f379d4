"""tf.data batches streamed from the decoded-image cache (melanoma/data/cache.py).

row indices -> (seeded) shuffle -> batch -> read the batch's rows from the cache file ->
augmentation -> preprocessing -> prefetch. Only indices are shuffled and only batches in
flight hold pixels, so host memory does not grow with the data set. The shuffle, the
per-batch augmentation seeds and the transform are those of
``melanoma.data.pipeline.make_dataset``: for the same seed the batches are the same, value for
value (tests/test_cache.py checks it).

``balanced=True`` (config ``balanced_sampling``) replaces the row list of each epoch by every
image of the majority class once and as many minority images: each minority image k times
(k = n_major // n_minor) plus n_major - k * n_minor of them drawn afresh each epoch (a seeded
shuffle), then the whole epoch is shuffled. Off, the pipeline is exactly the one above.
"""
from __future__ import annotations

import numpy as np

from melanoma.data.augmentation import Augmentation, augment_batch
from melanoma.data.pipeline import one_hot
from melanoma.data.preprocessing import Preprocessing


def balanced_rows(indices, labels, seed: int):
    """(dataset of (row, one-hot label), rows per epoch) for ``balanced=True``: the majority
    class once, the minority oversampled to the same count (see the module docstring)."""
    import tensorflow as tf

    indices = np.asarray(indices, np.int64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    counts = np.bincount(labels, minlength=2)
    if len(labels) != len(indices) or counts.min() == 0:
        raise ValueError(f"balanced sampling needs a label per row and both classes, got "
                         f"{len(indices)} rows, class counts {counts.tolist()}")
    major = int(np.argmax(counts))
    minor = 1 - major
    k, extra = divmod(int(counts[major]), int(counts[minor]))

    def part(rows, label):
        return tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(rows),
                                   tf.data.Dataset.from_tensor_slices(one_hot(np.full(len(rows), label))))

    minor_rows = indices[labels == minor]
    data = part(indices[labels == major], major).concatenate(part(np.tile(minor_rows, k), minor))
    if extra:
        drawn = part(minor_rows, minor).shuffle(len(minor_rows), seed=seed + 1,
                                                reshuffle_each_iteration=True)
        data = data.concatenate(drawn.take(extra))
    return data, 2 * int(counts[major])


def make_stream_dataset(cache, indices, labels, batch_size: int,
                        preprocessing: Preprocessing | None,
                        augmentation: Augmentation | None = None, shuffle: bool = False,
                        seed: int = 0, drop_remainder: bool = False, flip_axes: tuple = (),
                        balanced: bool = False):
    """Batches of preprocessed float32 images of rows ``indices`` of ``cache`` (and one-hot
    ``labels``, aligned with ``indices``, when given). ``flip_axes``: axes of the uint8
    (B, H, W, C) batch to reverse before anything else (test-time flips: (2,) horizontal,
    (1,) vertical, (1, 2) both). ``balanced``: oversample the minority class each epoch.
    ``preprocessing=None`` (and no augmentation): the uint8 rows as they are, for a model
    that casts, warps and preprocesses itself (``augment_on = "device"``)."""
    import tensorflow as tf

    indices = np.asarray(indices, np.int64).reshape(-1)
    n_rows = len(indices)
    if balanced:
        data, n_rows = balanced_rows(indices, labels, seed)
    else:
        rows = tf.data.Dataset.from_tensor_slices(indices)
        data = rows if labels is None else tf.data.Dataset.zip(
            rows, tf.data.Dataset.from_tensor_slices(one_hot(labels)))
    if shuffle:
        data = data.shuffle(n_rows, seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    aug = augmentation if augmentation is not None and augmentation.active else None
    if preprocessing is None and aug is not None:
        raise ValueError("augmentation in the pipeline needs its preprocessing there too")
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
        if preprocessing is None:
            return x if y is None else (x, y)
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
