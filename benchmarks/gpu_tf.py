"""The project's own TensorFlow path on a GPU: how well each augmentation placement feeds it,
and the paper config end to end. For a lent GPU machine WITH TensorFlow (docs/gpu.md has the
Keras-on-JAX figures of a machine without it).

    PYTHONPATH=. python benchmarks/gpu_tf.py --out "$OUT" --budget 540           # on the GPU
    PYTHONPATH=. python benchmarks/gpu_tf.py --tiny --out /tmp/gpu_tf            # CPU wiring

Items (in this order; one that would not fit in --budget seconds is skipped and says so):
  feed_device     B6 528 px, batch 16, the policy of --policy, augmentation INSIDE the model
                  (augment_on = "device"): uint8 batches streamed from the decoded-image cache
                  vs one uint8 batch repeated (no input work): images/s and GPU busy %.
  feed_pipeline   the same network fed by the tf.data placement (warp + preprocessing on the
                  host, float32 batches): images/s and GPU busy %; the host's cores are the
                  limit here (about 93 images/s per core at 528 px on the 2-core reference).
  paper_e2e       ``melanoma-bench run --config paper`` for 1 epoch of one variant on the
                  generated images (--images, 85/15 split), random weights: exit code, wall.
Steady state: per feed, a 1-step fit builds and compiles; then ``--steps`` steps are timed
from the end of step ``--warmup`` to the (synchronised) end of the fit call. GPU busy is
nvidia-smi's utilization.gpu sampled every 100 ms (benchmarks/gpu_feed.py) during that fit.
Writes <out>/gpu_tf.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def environment() -> dict:
    import tensorflow as tf

    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) \
        if any(os.access(os.path.join(p, "nvidia-smi"), os.X_OK)
               for p in os.environ.get("PATH", "").split(os.pathsep)) else None
    return {"tensorflow": tf.__version__, "gpus": [d.name for d in
                                                   tf.config.list_physical_devices("GPU")],
            "nvidia_smi_L": smi.stdout.strip() if smi else None, "cpu_count": os.cpu_count()}


def make_data(work: Path, images: int, size: int, source_size: int):
    """Generated JPEGs in the public layout (``images`` in all, 85 % train) and their
    decoded-image caches at ``size`` px: (root, train cache, test cache)."""
    from melanoma.data import cache, layout
    from melanoma.data.synthetic import SyntheticSpec, generate

    train_per_class, test_per_class = round(images * 0.85 / 2), round(images * 0.15 / 2)
    root = generate(work / "data", SyntheticSpec(n_train_per_class=train_per_class,
                                                 n_test_per_class=test_per_class,
                                                 image_size=source_size))
    train, test = cache.open_layout(layout.discover(root), size, "nearest", work / "cache")
    return root, train, test


class StepClock:
    """Keras callback: the time at the end of step ``warmup`` (later steps are timed)."""

    def __init__(self, warmup: int):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(cb, batch, logs=None):
                if batch + 1 == warmup:
                    self.start = time.perf_counter()

        self.start, self.callback = None, Clock()


def timed_fit(model, data, batch: int, steps: int, warmup: int, sample_gpu: bool) -> dict:
    from gpu_feed import UtilSampler

    clock = StepClock(warmup)
    sampler = UtilSampler() if sample_gpu else None
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock.callback])
    end = time.perf_counter()
    busy = sampler.stop() if sampler else {"mean_util_pct": None, "note": "not sampled"}
    timed_steps = steps - warmup
    return {"images_per_s": round(timed_steps * batch / (end - clock.start), 2),
            "timed_steps": timed_steps, "seconds": round(end - clock.start, 2), **busy}


def build(args, placement: str, preprocessing):
    """The paper's network (random weights) under --policy and --xla, for ``placement``."""
    import keras

    from melanoma import config as config_mod
    from melanoma.models.factory import build_classifier
    from melanoma.models.on_device import with_device_input
    from melanoma.models.training import compile_classifier

    variant = config_mod.load("paper").variants[0]
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(args.policy)
    try:
        network = build_classifier(args.backbone, args.size, "none", variant.head_units,
                                   variant.dropout, False, variant.bn_momentum)
    finally:
        keras.config.set_dtype_policy("float32")
    model = with_device_input(network, variant.augmentation, preprocessing, 0) \
        if placement == "device" else network
    model = compile_classifier(model, variant.learning_rate, jit_compile=args.xla)
    return model, variant


def feed(args, train, placement: str) -> dict:
    """Images/s and GPU busy for one placement: streamed from the cache (and, for the device
    placement, one repeated batch: the compute-bound rate)."""
    import numpy as np
    import tensorflow as tf

    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.data.stream import make_stream_dataset

    prep = get_preprocessing("samplewise")
    started = time.perf_counter()
    model, variant = build(args, placement, prep)
    host_prep, host_aug = (None, None) if placement == "device" else (prep, variant.augmentation)
    rows = np.arange(len(train))
    streamed = make_stream_dataset(train, rows, train.labels, args.batch, host_prep, host_aug,
                                   shuffle=True, seed=0, drop_remainder=True).repeat()
    model.fit(streamed, steps_per_epoch=1, epochs=1, verbose=0)  # build + trace + compile
    out = {"placement": placement, "policy": args.policy, "xla": args.xla,
           "first_step_seconds": round(time.perf_counter() - started, 1),
           "streamed": timed_fit(model, streamed, args.batch, args.steps, args.warmup, args.gpu)}
    if placement == "device":
        x, y = next(iter(streamed))
        resident = tf.data.Dataset.from_tensors((x, y)).cache().repeat()
        out["one_batch_repeated"] = timed_fit(model, resident, args.batch, args.steps, args.warmup, args.gpu)
        out["streamed_vs_repeated"] = round(out["streamed"]["images_per_s"]
                                            / out["one_batch_repeated"]["images_per_s"], 3)
    return out


def paper_e2e(args, root: Path, work: Path) -> dict:
    """The paper config, one variant, 1 epoch, random weights, on the generated images."""
    command = [sys.executable, "-m", "melanoma.cli.main", "run", "--config", "paper",
               "--data-dir", str(root), "--variant", "efficient_net_b6_samplewise",
               "--set", "defaults.weights=none", "--set", "defaults.epochs=1",
               "--set", f"defaults.backbone={args.backbone}",
               "--set", f"defaults.image_size={args.size}",
               "--set", f"defaults.mixed_precision={str(args.policy != 'float32').lower()}",
               "--out", str(work / "paper_out"), "--models-dir", str(work / "paper_models")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "MELANOMA_DATA_CACHE": str(work / "cache")})
    return {"command": " ".join(command[1:]), "exit_code": done.returncode,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "stderr_tail": done.stderr[-1500:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_tf_out"))
    p.add_argument("--budget", type=float, default=540.0, help="seconds for everything")
    p.add_argument("--only", default="feed_device,feed_pipeline,paper_e2e")
    p.add_argument("--policy", default="mixed_float16", choices=["float32", "mixed_float16"])
    p.add_argument("--xla", type=lambda v: v.lower() == "true", default=True)
    p.add_argument("--images", type=int, default=2000, help="generated images (85 %% train)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="B0 at 32 px, few images and steps")
    p.add_argument("--work", default="/tmp/gpu_tf_work")
    args = p.parse_args(argv)
    args.backbone, args.size, args.source, args.batch = "B6", 528, 600, 16
    if args.tiny:
        args.backbone, args.size, args.source = "B0", 32, 48
        args.images, args.steps, args.warmup = min(args.images, 120), 6, 2
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "environment": environment(), "items": {}, "skipped": {}}
    args.gpu = bool(results["environment"]["gpus"])
    say(f"environment {results['environment']}")
    root, train, _ = make_data(work, args.images, args.size, args.source)
    say(f"data: {len(train)} training images cached at {args.size} px under {work}")
    items = {"feed_device": lambda: feed(args, train, "device"),
             "feed_pipeline": lambda: feed(args, train, "pipeline"),
             "paper_e2e": lambda: paper_e2e(args, root, work)}
    for name in [n for n in args.only.split(",") if n]:
        left = args.budget - (time.perf_counter() - T0)
        if left < 60 and not args.tiny:
            results["skipped"][name] = f"{left:.0f} s of the budget left"
            continue
        say(f"{name} ...")
        try:
            results["items"][name] = items[name]()
        except Exception:  # a benchmark records the failure and goes on to the next item
            results["items"][name] = {"error": traceback.format_exc()[-2000:]}
        say(f"{name}: {json.dumps(results['items'][name])[:600]}")
        (out / "gpu_tf.json").write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in v for v in results["items"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
