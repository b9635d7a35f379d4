"""The random warp three ways, side by side on this machine: TensorFlow's
ImageProjectiveTransformV3 (the pipeline placement), the gather warp the device placement
uses, and the gather warp compiled by XLA (as inside a jit-compiled training step).

    PYTHONPATH=. python benchmarks/warp_speed.py                 # 16 images at 528 px
    PYTHONPATH=. python benchmarks/warp_speed.py --size 224 --rounds 9

Each side is traced and run once first; then the sides alternate for --rounds rounds and the
median wall time per batch is reported, with each side's rate relative to the TF op.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=528)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from melanoma.data.augmentation import (
        Augmentation,
        apply_transforms,
        transform_matrices,
        warp_with_gather,
    )

    aug = Augmentation(20.0, 0.2, True, True)  # the paper config's ranges
    x = tf.constant(np.random.default_rng(0).integers(0, 256, (args.batch, args.size,
                                                                args.size, 3)), tf.float32)
    m = transform_matrices(aug, args.batch, args.size, args.size, tf.constant([1, 2], tf.int64))
    sides = {"ImageProjectiveTransformV3 (pipeline)": tf.function(apply_transforms),
             "gather warp": tf.function(warp_with_gather),
             "gather warp + XLA (device, jit)": tf.function(warp_with_gather, jit_compile=True)}
    for warp in sides.values():
        warp(x, m).numpy()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, warp in sides.items():
            started = time.perf_counter()
            warp(x, m).numpy()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(next(iter(times.values())))
    print(f"{args.batch} images at {args.size} px, {os.cpu_count()} CPUs, median of "
          f"{args.rounds} alternating rounds")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:38s} {median * 1000:7.1f} ms  {args.batch / median:7.1f} images/s  "
              f"{base / median:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
