"""uint8 batches of decoded-cache rows for Keras' fit and predict, on every backend.

    CacheBatches(cache, rows, labels, batch_size=32, shuffle=True, seed=42)   # training
    CacheBatches(cache, rows, batch_size=64, flip_axes=(2,))                  # test-time flip

A ``keras.utils.PyDataset``: worker threads read each batch's rows from the decoded-image
cache (``DecodedCache.read_rows``, or any object with that method and ``image_size``) and
hand uint8 (B, H, W, 3) images, with one-hot labels when given, to the model, whose
:class:`melanoma.models.image_input.ImageInput` layer casts, augments and preprocesses them.
No TensorFlow: the same loader feeds the TensorFlow, JAX and PyTorch backends.

The order of epoch ``e`` is a pure function of ``(seed, e)`` (:func:`epoch_rows`), never of
how many iterators were made before: a resumed run starts at ``first_epoch`` = the epochs
done and continues bit for bit. ``balanced=True`` (config ``balanced_sampling``)
makes each epoch every majority image once and as many minority images: each minority image
k times (k = n_major // n_minor) plus n_major - k * n_minor of them drawn afresh each epoch,
then the whole epoch is shuffled.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import keras
import numpy as np

TRAIN_WORKERS = 2  # threads reading rows while the model steps (pread: the GIL is released)


def one_hot(labels) -> np.ndarray:
    """(N,) 0/1 labels -> (N, 2) float32 one-hot (column 1 = malignant)."""
    return np.eye(2, dtype=np.float32)[np.asarray(labels, np.int64)]


def balanced_epoch(indices, labels, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels) of one balanced epoch, unshuffled: the majority class once, the
    minority tiled k times plus the remainder drawn from ``rng`` (see the module docstring)."""
    counts = np.bincount(labels, minlength=2)
    if len(labels) != len(indices) or counts.min() == 0:
        raise ValueError(f"balanced sampling needs a label per row and both classes, got "
                         f"{len(indices)} rows, class counts {counts.tolist()}")
    major = int(np.argmax(counts))
    minor_rows = indices[labels == 1 - major]
    k, extra = divmod(int(counts[major]), len(minor_rows))
    drawn = rng.permutation(minor_rows)[:extra]
    rows = np.concatenate([indices[labels == major], np.tile(minor_rows, k), drawn])
    return rows, np.repeat([major, 1 - major], [counts[major], counts[major]])


def epoch_rows(indices, labels, seed: int, epoch: int, shuffle: bool = True,
               balanced: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(cache rows, labels or None) in the order of epoch ``epoch``: a pure function of
    ``(seed, epoch)`` and the inputs."""
    rows = np.asarray(indices, np.int64).reshape(-1)
    labels = None if labels is None else np.asarray(labels, np.int64).reshape(-1)
    rng = np.random.default_rng([int(seed), int(epoch)])
    if balanced:
        rows, labels = balanced_epoch(rows, labels, rng)
    if shuffle:
        order = rng.permutation(len(rows))
        rows, labels = rows[order], None if labels is None else labels[order]
    return rows, labels


class CacheBatches(keras.utils.PyDataset):
    """uint8 image batches (and one-hot labels) of rows ``indices`` of ``cache``.

    ``labels`` align with ``indices``; ``flip_axes``: axes of the uint8 (B, H, W, C) batch
    to reverse (test-time flips: (2,) horizontal, (1,) vertical, (1, 2) both);
    ``drop_remainder``: only full batches (a GPU step then never recompiles).
    ``pad_remainder`` (inference, no labels): the last batch is filled up to ``batch_size``
    with copies of its last image, so every batch has one shape and an XLA-compiled
    ``predict`` compiles once; the caller keeps the first ``rows_per_epoch`` outputs. In
    inference mode each image's output does not depend on the others in its batch.

    ``repeat=True`` (training): an endless dataset whose batch ``i`` is batch
    ``i % batches_per_epoch`` of epoch ``first_epoch + i // batches_per_epoch``; fit it with
    ``steps_per_epoch=batches_per_epoch``. Every batch is a pure function of its index, so
    neither Keras' read-ahead (TensorFlow prefetches the next epoch's first batches before
    the epoch ends) nor the number of iterators made changes what a step sees. ``workers``
    threads read the next batches ahead (Keras' own enqueuer drops queued batches at each
    epoch's end, so it is not used).
    """

    def __init__(self, cache, indices, labels=None, batch_size: int = 32, shuffle: bool = False,
                 seed: int = 0, balanced: bool = False, flip_axes: tuple = (),
                 drop_remainder: bool = False, repeat: bool = False, first_epoch: int = 0,
                 workers: int = TRAIN_WORKERS, pad_remainder: bool = False):
        super().__init__(workers=1, use_multiprocessing=False)  # 1: no Keras enqueuer
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if balanced and labels is None:
            raise ValueError("balanced sampling needs labels")
        if pad_remainder and (labels is not None or repeat or drop_remainder):
            raise ValueError("pad_remainder is for inference: no labels, repeat or drop_remainder")
        self.pad_remainder = pad_remainder
        self.cache, self.batch_size, self.flip_axes = cache, int(batch_size), tuple(flip_axes)
        self.indices = np.asarray(indices, np.int64).reshape(-1)
        self.labels = None if labels is None else np.asarray(labels, np.int64).reshape(-1)
        if self.labels is not None and len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.indices)} rows but {len(self.labels)} labels")
        self.shuffle, self.seed, self.balanced = shuffle, int(seed), balanced
        self.drop_remainder, self.repeat, self.first_epoch = drop_remainder, repeat, first_epoch
        self.read_ahead = max(0, int(workers))
        self._orders: dict[int, tuple] = {}
        self._pending: dict[int, Future] = {}
        self._pool = None
        self._lock = threading.Lock()
        self.rows_per_epoch = len(self._order(0)[0])
        whole, part = divmod(self.rows_per_epoch, self.batch_size)
        self.batches_per_epoch = whole if drop_remainder else whole + bool(part)

    @property
    def num_batches(self):
        return None if self.repeat else self.batches_per_epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _order(self, epoch: int):
        if epoch not in self._orders:
            if len(self._orders) > 2:  # the current and the next epoch are all that is read
                self._orders.pop(min(self._orders))
            self._orders[epoch] = epoch_rows(self.indices, self.labels, self.seed, epoch,
                                             self.shuffle, self.balanced)
        return self._orders[epoch]

    def batch(self, i: int):
        """Batch ``i`` (see the class docstring), read now."""
        if i < 0 or (not self.repeat and i >= self.batches_per_epoch):
            raise IndexError(f"batch {i} of {self.batches_per_epoch}")
        epoch, k = divmod(i, self.batches_per_epoch)
        with self._lock:
            rows, labels = self._order(self.first_epoch + epoch)
        part = slice(k * self.batch_size, (k + 1) * self.batch_size)
        x = self.cache.read_rows(rows[part])
        if self.flip_axes:
            x = np.ascontiguousarray(np.flip(x, axis=self.flip_axes))
        if self.pad_remainder and 0 < len(x) < self.batch_size:
            x = np.concatenate([x, np.repeat(x[-1:], self.batch_size - len(x), axis=0)])
        return x if labels is None else (x, one_hot(labels[part]))

    def __getitem__(self, i: int):
        if not self.read_ahead:
            return self.batch(i)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.read_ahead, "cache-batches")
            for old in [j for j in self._pending if j < i]:  # skipped: not needed any more
                self._pending.pop(old).cancel()
            last = i + 2 * self.read_ahead
            if not self.repeat:
                last = min(last, self.batches_per_epoch - 1)
            for j in range(i, last + 1):
                if j not in self._pending:
                    self._pending[j] = self._pool.submit(self.batch, j)
            future = self._pending.pop(i, None)
        return future.result() if future is not None else self.batch(i)

    def start_at(self, epoch: int) -> None:
        """Make batch 0 the first of epoch ``epoch`` (a resumed run: the epochs done)."""
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self.first_epoch = int(epoch)

    def close(self) -> None:
        """Stop the read-ahead threads (they also end with the process)."""
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


class ArrayRows:
    """An in-memory uint8 array behind the decoded-image cache's row interface."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = np.asarray(pixels)
        self.image_size = int(self.pixels.shape[1]) if self.pixels.ndim == 4 else 0

    def __len__(self) -> int:
        return len(self.pixels)

    def read_rows(self, indices) -> np.ndarray:
        return self.pixels[np.asarray(indices, np.int64)]


def array_batches(pixels: np.ndarray, labels=None, batch_size: int = 32, **kwargs) -> CacheBatches:
    """:class:`CacheBatches` over an array in memory (tests, benchmarks, small sets)."""
    return CacheBatches(ArrayRows(pixels), np.arange(len(pixels)), labels, batch_size, **kwargs)
