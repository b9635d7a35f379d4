"""Feeding helpers for gpu_keras_jax.py: a uint8 memmap cache streamed in shuffled batches
(optionally prefetched by a thread, as tf.data's prefetch would)."""
from __future__ import annotations

import queue
import threading


def make_memmap(cfg, path: str):
    """A uint8 (n, size, size, 3) cache on local disk, written in chunks, reopened read-only."""
    import numpy as np

    shape = (cfg.cache_images, cfg.size, cfg.size, 3)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    rng = np.random.default_rng(1)
    for i in range(0, shape[0], 64):
        chunk = mm[i:i + 64]
        chunk[...] = rng.integers(0, 256, chunk.shape, dtype=np.uint8)
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def streamed(cfg, mm):
    """Endless shuffled batches gathered from the memmap on the host (numpy, uint8)."""
    import numpy as np

    rng = np.random.default_rng(2)
    labels = np.eye(2, dtype=np.float32)[rng.integers(0, 2, len(mm))]
    while True:
        order = rng.permutation(len(mm))
        for i in range(0, len(order) - cfg.batch + 1, cfg.batch):
            idx = np.sort(order[i:i + cfg.batch])
            yield np.asarray(mm[idx]), labels[idx]


def prefetched(batches, depth: int = 4):
    """Yield from ``batches`` while a daemon thread fills a queue of ``depth`` ahead."""
    ahead: queue.Queue = queue.Queue(depth)

    def fill():
        for item in batches:
            ahead.put(item)

    threading.Thread(target=fill, daemon=True).start()
    while True:
        yield ahead.get()
