"""The prepared GPU run: the paper job end to end and a GPU-sized table on real images.

For a lent GPU machine with JAX but no TensorFlow (Keras 3 travels as wheels, docs/gpu.md):

    KERAS_BACKEND=jax PYTHONUNBUFFERED=1 python benchmarks/gpu_run.py --out "$OUT" \\
        --isic-dir .isic/isic2017 --budget 540
    python benchmarks/gpu_run.py --tiny --out /tmp/g --isic-dir ../shared/data/isic2017   # CPU

Items, in this order (``--only`` picks some), each skipped when its estimated cost no longer
fits the remaining ``--budget`` seconds:

- ``paper-<mode>`` for mode ``mixed_xla``, ``float32_xla``, ``mixed`` (no XLA):
  ``melanoma-bench run --config paper`` (first variant, random weights, one epoch) end to end
  (train, evaluate, audit, report, Grad-CAM) on 2,000 generated 300 px images (1,500 train,
  500 test). Recorded: wall time, time to the first training step and the XLA compile
  seconds (JAX's own compile events), training images/s (the epoch without its compiles),
  test inference images/s, mean GPU busy % (nvidia-smi every 200 ms) and peak GPU memory
  (JAX's allocator; preallocation off).
- ``isic``: a GPU-sized config on the real ISIC 2017 images: EfficientNet-B3 at 256 px from
  random weights, mixed precision + XLA, 3 seeds, as many epochs (up to ``--isic-epochs``) as
  the budget allows after the first epoch's measured time; its table with 95% intervals is
  written to ``OUT/isic2017_gpu.md`` for docs/isic2017.md.

Each item runs in its own process (``--child``), so each mode compiles from scratch and its
peak memory is its own. ``--tiny``: B0 at 32 px on 40 generated images and 24 real ones,
the same code paths on a CPU (tests/test_perf.py, slow). Results: ``OUT/gpu_run.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gpu_sampler import GpuSampler  # beside this script

ROOT = Path(__file__).resolve().parent.parent
MODES = {"mixed_xla": (True, True), "float32_xla": (False, True), "mixed": (True, False)}
# seconds each item is expected to take on an H200, from docs/gpu.md's B6 compiles (181 s
# mixed, 92 s float32 first step; op-by-op JAX never finished a first B6 step in 110 s)
PRIOR_SECONDS = {"paper-mixed_xla": 300, "paper-float32_xla": 200, "paper-mixed": 240,
                 "isic": 240}
TINY = {"backbone": "B0", "image_size": 32, "per_class": (10, 10), "generated_size": 40,
        "isic_limit": 24, "isic_backbone": "B0", "isic_size": 32}
FULL = {"backbone": "B6", "image_size": 528, "per_class": (750, 250), "generated_size": 300,
        "isic_limit": None, "isic_backbone": "B3", "isic_size": 256}


class Timeline:
    """Timestamps of the project's log lines and of JAX's compiles, in the child process."""

    def __init__(self):
        import logging

        self.t0, self.lines, self.compiles = time.perf_counter(), [], []
        timeline = self

        class Handler(logging.Handler):
            def emit(self, record):
                timeline.lines.append((time.perf_counter() - timeline.t0, record.getMessage()))

        logger = logging.getLogger("melanoma")
        logger.addHandler(Handler())
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        try:
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(self._compiled)
        except ImportError:  # another backend: no compile events
            pass

    def _compiled(self, event: str, seconds: float, **kwargs):
        if event.endswith("backend_compile_duration"):
            self.compiles.append((time.perf_counter() - self.t0, float(seconds)))

    def first(self, words: str) -> float | None:
        return next((t for t, line in self.lines if words in line), None)

    def compile_seconds(self, start: float = 0.0, end: float = float("inf")) -> float:
        return round(sum(s for t, s in self.compiles if start <= t <= end), 1)


def peak_memory_gib() -> float | None:
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
    except (ImportError, RuntimeError):
        return None
    peak = stats.get("peak_bytes_in_use")
    return round(peak / 2**30, 2) if peak else None


def paper_child(mode: str, sizes: dict, work: Path) -> dict:
    """One ``run --config paper`` (first variant, one epoch) through the library, timed."""
    import melanoma

    mixed, xla = MODES[mode]
    n_train, n_test = sizes["per_class"]
    overrides = ["defaults.epochs=1", "defaults.weights=none",
                 f"defaults.backbone={sizes['backbone']}",
                 f"defaults.image_size={sizes['image_size']}",
                 f"defaults.mixed_precision={str(mixed).lower()}",
                 f"defaults.jit_compile={str(xla).lower()}",
                 f"data.synthetic.n_train_per_class={n_train}",
                 f"data.synthetic.n_test_per_class={n_test}",
                 f"data.synthetic.image_size={sizes['generated_size']}"]
    cfg = melanoma.load_config("paper", overrides=overrides)
    variant = cfg.variants[0].name
    timeline = Timeline()
    result = melanoma.run_benchmark(cfg, variants=[variant], out_dir=work / f"paper-{mode}",
                                    models_dir=work / f"models-{mode}")
    figures = _paper_figures(timeline, result, work / f"paper-{mode}")
    return {"variant": variant, **figures,
            **inference_rate(work / f"models-{mode}", sizes["image_size"])}


def _paper_figures(timeline: Timeline, result, out_dir: Path) -> dict:
    info = json.loads((out_dir / "results.json").read_text())["provenance"]
    n_train = info["data"]["n_train"]
    start, end = timeline.first("training 1 epochs"), timeline.first("epoch 1/1")
    first_compile = timeline.compiles[0][0] if timeline.compiles else None
    figures = {"wall_s": round(time.perf_counter() - timeline.t0, 1),
               "backend": info["hardware"].get("backend"), "gpus": info["hardware"]["gpus"],
               "n_train": n_train,
               "n_test": sum(1 for _ in open(out_dir / "predictions.csv")) - 1,
               "compile_s_total": timeline.compile_seconds(),
               "time_to_first_step_s": None if start is None or first_compile is None
               else round(first_compile - start, 1),
               "index_html": (out_dir / "index.html").is_file(),
               "peak_gpu_mem_gib": peak_memory_gib()}
    if start is not None and end is not None:
        busy = end - start - timeline.compile_seconds(start, end)
        figures.update(epoch_s=round(end - start, 1),
                       train_images_per_s=round(n_train / busy, 1) if busy > 0 else None)
    saved, done = timeline.first(": saved "), timeline.first("wrote ")
    if saved is not None and done is not None:  # test predictions, audit, report, Grad-CAM
        figures["evaluate_and_report_s"] = round(done - saved, 1)
    return figures


def inference_rate(models_dir: Path, size: int, batch: int = 64, batches: int = 8) -> dict:
    """Images/s of the saved network's ``predict`` on device-resident-sized batches: one
    call to compile, then one timed call of ``batches`` batches."""
    import keras
    import numpy as np

    files = sorted(models_dir.glob("*.keras"))
    if not files:
        return {}
    model = keras.saving.load_model(files[0], compile=False)
    x = np.random.default_rng(0).random((batch * batches, size, size, 3), np.float32) * 255
    started = time.perf_counter()
    model.predict(x[:batch], batch_size=batch, verbose=0)
    first = time.perf_counter() - started
    started = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    return {"predict_first_call_s": round(first, 1),
            "inference_images_per_s": round(len(x) / (time.perf_counter() - started), 1),
            "inference_batch": batch}


ISIC_CONFIG = """name = "isic2017_gpu"
seed = 42
seeds = [1, 2, 3]
[data]
dir = "{data}"
val_fraction = 0.15
interpolation = "nearest"
[defaults]
backbone = "{backbone}"
image_size = {size}
weights = "none"
epochs = {epochs}
learning_rate = 1e-3
batch_size = 32
val_batch_size = 64
head_units = 128
bn_momentum = 0.9
mixed_precision = {mixed}
jit_compile = true
[defaults.augmentation]
rotation_deg = 20.0
shear_deg = 0.2
horizontal_flip = true
vertical_flip = true
[[variants]]
name = "efficient_net_{name}_samplewise"
preprocessing = "samplewise"
"""


def isic_child(data: Path, epochs: int, sizes: dict, work: Path, tiny: bool) -> dict:
    """The ISIC 2017 table: B3 at 256 px, 3 seeds, mixed + XLA (float32 on a CPU)."""
    import melanoma

    path = work / "isic2017_gpu.toml"
    path.write_text(ISIC_CONFIG.format(data=data.resolve(), backbone=sizes["isic_backbone"],
                                       size=sizes["isic_size"], epochs=epochs,
                                       mixed="false" if tiny else "true",
                                       name=sizes["isic_backbone"].lower()))
    timeline = Timeline()
    result = melanoma.run_benchmark(str(path), limit=sizes["isic_limit"],
                                    out_dir=work / "isic", models_dir=work / "models-isic")
    table = (work / "isic" / "results.md").read_text()
    return {"epochs": epochs, "seeds": 3, "wall_s": round(time.perf_counter() - timeline.t0, 1),
            "compile_s_total": timeline.compile_seconds(), "peak_gpu_mem_gib": peak_memory_gib(),
            "rows": json.loads(result.rows.to_json(orient="records")), "table_md": table}


def run_child(args) -> None:
    sizes = TINY if args.tiny else FULL
    work = Path(args.work)
    if args.child == "isic":
        found = isic_child(Path(args.isic_dir), args.isic_epochs, sizes, work, args.tiny)
    else:
        found = paper_child(args.child.removeprefix("paper-"), sizes, work)
    print("GPU_RUN_RESULT " + json.dumps(found, default=str), flush=True)


def child(item: str, args, work: Path, timeout: float, epochs: int | None = None) -> dict:
    """Run one item in a fresh process; its figures, GPU busy % and exit status."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", item, "--work",
               str(work), "--out", str(args.out), "--isic-dir", str(args.isic_dir or ""),
               "--isic-epochs", str(epochs or args.isic_epochs)] + (["--tiny"] if args.tiny else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "MELANOMA_DATA_CACHE": str(work / "data")}
    sampler, started = GpuSampler(), time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        code, out, err = "timeout", expired.stdout or "", expired.stderr or ""
        out, err = [o.decode() if isinstance(o, bytes) else o for o in (out, err)]
    busy = sampler.stop()["mean_util_pct"]
    (Path(args.out) / f"{item}.log").write_text(err[-200_000:])
    lines = [line for line in out.splitlines() if line.startswith("GPU_RUN_RESULT ")]
    found = json.loads(lines[-1].split(" ", 1)[1]) if lines else {}
    return {"exit": code, "seconds": round(time.perf_counter() - started, 1),
            "gpu_busy_pct": busy, **found}


def isic_epochs(args, left: float, measured: dict) -> int:
    """Epochs for the ISIC table that fit ``left`` seconds: 3 seeds, one compile, and the
    per-epoch time of a first probe run (1 epoch, 1 seed would cost a compile: estimated from
    the paper item's training rate when there was one, else 6 s an epoch)."""
    rate = next((m.get("train_images_per_s") for m in measured.values()
                 if m.get("train_images_per_s")), None)
    per_epoch = 6.0 if rate is None else max(1.0, 1830 / (rate * 8))  # B3@256 ~8x B6@528
    fit = int((left - 120) / (3 * per_epoch))
    return max(1, min(args.isic_epochs, fit))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=540, help="seconds for everything")
    parser.add_argument("--only", default=None, help="comma-separated items (default: all)")
    parser.add_argument("--isic-dir", default=None, help="ISIC 2017 layout (train/, test/)")
    parser.add_argument("--isic-epochs", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="B0 at 32 px: a CPU wiring check")
    parser.add_argument("--work", default=None, help="scratch folder (default OUT/work)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")  # the GPU machine has no TensorFlow
    if args.child:
        run_child(args)
        return 0
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or args.out / "work")
    work.mkdir(parents=True, exist_ok=True)
    items = [f"paper-{m}" for m in MODES] + (["isic"] if args.isic_dir else [])
    if args.only:
        items = [i for i in items if i in args.only.split(",")]
    results = {"backend": os.environ["KERAS_BACKEND"], "tiny": args.tiny, "budget_s": args.budget,
               "items": {}, "skipped": {}}
    for item in items:
        left = args.budget - (time.perf_counter() - started)
        prior = 30 if args.tiny else PRIOR_SECONDS[item]
        if left < prior:
            results["skipped"][item] = f"{left:.0f} s left, about {prior} s needed"
            continue
        epochs = isic_epochs(args, left, results["items"]) if item == "isic" else None
        results["items"][item] = child(item, args, work, left, epochs)
        (args.out / "gpu_run.json").write_text(json.dumps(results, indent=1, default=str))
    isic = results["items"].get("isic", {})
    if isic.get("table_md"):
        (args.out / "isic2017_gpu.md").write_text(isic["table_md"])
    results["wall_s"] = round(time.perf_counter() - started, 1)
    (args.out / "gpu_run.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({k: {f: v.get(f) for f in ("exit", "seconds", "train_images_per_s",
                                                 "time_to_first_step_s", "gpu_busy_pct")}
                      for k, v in results["items"].items()}, indent=1))
    failed = [k for k, v in results["items"].items() if v["exit"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
