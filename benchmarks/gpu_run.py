"""The prepared GPU run: the paper job end to end and a GPU-sized table on real images.

For a lent GPU machine with JAX but no TensorFlow (Keras 3 travels as wheels, docs/gpu.md):

    KERAS_BACKEND=jax PYTHONUNBUFFERED=1 python benchmarks/gpu_run.py --out "$OUT" \\
        --isic-dir .isic/isic2017 --budget 540
    python benchmarks/gpu_run.py --tiny --out /tmp/g --isic-dir ../shared/data/isic2017   # CPU

Items, in this order (``--only`` picks some), each skipped when its estimated cost no longer
fits the remaining ``--budget`` seconds:

- ``paper-<mode>`` for mode ``mixed_xla``, ``float32_xla``, ``mixed`` (no XLA):
  ``melanoma-bench run --config paper`` (first variant, random weights, one epoch) end to end
  (train, evaluate, audit, report, Grad-CAM) on 2,000 generated 300 px images (1,488 train,
  512 test). Recorded: wall time, time to the first training step and the XLA compile
  seconds (JAX's own compile events), training images/s (the epoch without its compiles),
  test inference images/s, mean GPU busy % (nvidia-smi every 200 ms) and peak GPU memory
  (JAX's allocator; preallocation off).
- ``isic``: a GPU-sized config on the real ISIC 2017 images: EfficientNet-B3 at 256 px from
  random weights, float32 + XLA (the config default's precision: mixed float16 diverged on
  the paper item, docs/gpu.md), 3 seeds, as many epochs (up to ``--isic-epochs``) as the
  budget allows by the times measured on an H200; its table with 95% intervals is
  written to ``OUT/isic2017_gpu.md`` for docs/isic2017.md.

Each item runs in its own process (``--child``), so each mode compiles from scratch and its
peak memory is its own. ``--tiny``: B0 at 32 px on 40 generated images and 24 real ones,
the same code paths on a CPU (tests/test_perf.py, slow). Results: ``OUT/gpu_run.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from gpu_sampler import GpuSampler  # beside this script

ROOT = Path(__file__).resolve().parent.parent
MODES = {"mixed_xla": (True, True), "float32_xla": (False, True), "mixed": (True, False)}
# seconds each item needs at least on an H200 (docs/gpu.md, 2026-12-04): paper-mixed_xla
# reached the end of its epoch after 252 s; paper-float32_xla had not finished after 237 s;
# isic's build and compiles took 210 s before its second epoch. Op-by-op JAX (paper-mixed)
# never finished a first B6 step in 110 s.
PRIOR_SECONDS = {"paper-mixed_xla": 360, "paper-float32_xla": 300, "paper-mixed": 400,
                 "isic": 300}
TINY = {"backbone": "B0", "image_size": 32, "per_class": (10, 10), "generated_size": 40,
        "isic_limit": 24, "isic_backbone": "B0", "isic_size": 32}
# 744 + 744 training images: 1,264 train rows after the 15% validation split = 79 batches of
# 16, so XLA compiles the training step once (a last, smaller batch is a new shape: a second
# compile of minutes at B6); 256 + 256 test images: 2,000 in all
FULL = {"backbone": "B6", "image_size": 528, "per_class": (744, 256), "generated_size": 300,
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
    found = {"variant": variant, **_paper_figures(timeline, result, work / f"paper-{mode}")}
    print("GPU_RUN_RESULT " + json.dumps(found, default=str), flush=True)  # if a later part overruns
    found.update(inference_rate(work / f"models-{mode}", sizes["image_size"]))
    print("GPU_RUN_RESULT " + json.dumps(found, default=str), flush=True)
    found.update(gradcam_rate(work / f"models-{mode}", cfg.variants[0].preprocessing))
    return found


def _paper_figures(timeline: Timeline, result, out_dir: Path) -> dict:
    info = json.loads((out_dir / "results.json").read_text())["provenance"]
    n_train = info["data"]["n_train"]
    start, end = timeline.first("training 1 epochs"), timeline.first("epoch 1/1")
    line = next((text for t, text in timeline.lines if "epoch 1/1" in text), "")
    took = re.search(r"\(([\d.]+) s\)\s*$", line)  # the epoch's own seconds (not the build)
    epoch_start = None if end is None or took is None else end - float(took.group(1))
    # the first step runs as soon as the training step's XLA compile (the epoch's longest;
    # JAX reports each compile when it ends) is done
    window = [] if epoch_start is None else [(s, t) for t, s in timeline.compiles
                                             if epoch_start <= t <= end]
    first_compile = max(window)[1] if window else None
    figures = {"wall_s": round(time.perf_counter() - timeline.t0, 1),
               "backend": info["hardware"].get("backend"), "gpus": info["hardware"]["gpus"],
               "n_train": n_train,
               "n_test": sum(1 for _ in open(out_dir / "predictions.csv")) - 1,
               "compile_s_total": timeline.compile_seconds(),
               "time_to_first_step_s": None if first_compile is None
               else round(first_compile - start, 1),
               "index_html": (out_dir / "index.html").is_file(),
               "peak_gpu_mem_gib": peak_memory_gib()}
    if epoch_start is not None:  # the epoch without its compiles (its validation included)
        busy = end - epoch_start - timeline.compile_seconds(epoch_start, end)
        figures.update(epoch_s=round(end - epoch_start, 1),
                       build_s=round(epoch_start - start, 1),
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


def gradcam_rate(models_dir: Path, preprocessing: str, n: int = 8) -> dict:
    """Seconds of the saved network's Grad-CAM (melanoma.explain.gradcam, as the report's
    galleries use it) for ``n`` 300 px images: the first call (JAX: an eager forward pass
    and the gradient's compile) and a second call."""
    import numpy as np

    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.explain.gradcam import gradcam
    from melanoma.models.loading import load

    files = sorted(models_dir.glob("*.keras"))
    if not files:
        return {}
    model = load(files[0]).model
    images = np.random.default_rng(1).integers(0, 256, (n, 300, 300, 3), np.uint8)
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        maps = gradcam(model, images, get_preprocessing(preprocessing))
        seconds.append(round(time.perf_counter() - started, 1))
    return {"gradcam_first_call_s": seconds[0], "gradcam_second_call_s": seconds[1],
            "gradcam_images": n, "gradcam_maps_finite": bool(np.isfinite(maps).all())}


# val_fraction 0.1515, not 0.15: 326 of the 2,150 training images validate and 1,824 train,
# 57 batches of 32, so the training step compiles once (see FULL)
ISIC_CONFIG = """name = "isic2017_gpu"
seed = 42
seeds = [1, 2, 3]
[data]
dir = "{data}"
val_fraction = 0.1515
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
mixed_precision = false
jit_compile = true
[defaults.augmentation]
rotation_deg = 20.0
shear_deg = 0.2
horizontal_flip = true
vertical_flip = true
[report]
gradcam = false          # the paper item times Grad-CAM; here every second goes to epochs
[[variants]]
name = "efficient_net_{name}_samplewise"
preprocessing = "samplewise"
"""


def isic_child(data: Path, epochs: int, sizes: dict, work: Path) -> dict:
    """The ISIC 2017 table: B3 at 256 px, 3 seeds, float32 + XLA."""
    import melanoma

    path = work / "isic2017_gpu.toml"
    path.write_text(ISIC_CONFIG.format(data=data.resolve(), backbone=sizes["isic_backbone"],
                                       size=sizes["isic_size"], epochs=epochs,
                                       name=sizes["isic_backbone"].lower()))
    timeline = Timeline()
    result = melanoma.run_benchmark(str(path), limit=sizes["isic_limit"],
                                    out_dir=work / "isic", models_dir=work / "models-isic")
    table = (work / "isic" / "results.md").read_text()
    return {"epochs": epochs, "seeds": 3, "wall_s": round(time.perf_counter() - timeline.t0, 1),
            "compile_s_total": timeline.compile_seconds(), "peak_gpu_mem_gib": peak_memory_gib(),
            "rows": json.loads(result.rows.to_json(orient="records")), "table_md": table}


def run_child(args) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(relativeCreated)9.0f ms %(name)s: %(message)s")
    sizes = TINY if args.tiny else FULL
    work = Path(args.work)
    if args.child == "isic":
        found = isic_child(Path(args.isic_dir), args.isic_epochs, sizes, work)
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
    # the log goes to OUT as it is written: a run stopped from outside still leaves it
    with open(Path(args.out) / f"{item}.log", "w") as log:
        try:
            done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=log,
                                  text=True, timeout=timeout)
            code, out = done.returncode, done.stdout
        except subprocess.TimeoutExpired as expired:
            code, out = "timeout", expired.stdout or ""
            out = out.decode() if isinstance(out, bytes) else out
    busy = sampler.stop()["mean_util_pct"]
    lines = [line for line in out.splitlines() if line.startswith("GPU_RUN_RESULT ")]
    found = json.loads(lines[-1].split(" ", 1)[1]) if lines else {}
    return {"exit": code, "seconds": round(time.perf_counter() - started, 1),
            "gpu_busy_pct": busy, **found}


def isic_epochs(args, left: float) -> int:
    """Epochs for the ISIC table that fit ``left`` seconds: 3 seeds after the fixed cost
    and at the epoch time measured on an H200 under mixed float16 + XLA (2026-12-04, B3 at
    256 px: 36 s to build, 170 s of compiles in the first epoch, about 6 s a seed to save
    and predict, 2.8 s an epoch of 1,824 training and 326 validation images), scaled to
    float32 by B6's measured ratios there (compile 0.6x, epoch 1.34x), plus 60 s for the
    report; on a CPU (``--tiny``) 6 s an epoch."""
    fixed, per_epoch = (60, 6.0) if args.tiny else (36 + 0.6 * 170 + 18 + 60, 2.8 * 1.34)
    fit = int((left - fixed) / (3 * per_epoch))
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
    prior = {item: 30 if args.tiny else PRIOR_SECONDS[item] for item in items}
    for n, item in enumerate(items):
        left = args.budget - (time.perf_counter() - started)
        if left < prior[item]:
            results["skipped"][item] = f"{left:.0f} s left, about {prior[item]} s needed"
            continue
        # an item overrunning its estimate may not take the later items' share
        cap = max(prior[item], left - sum(prior[later] for later in items[n + 1:]))
        epochs = isic_epochs(args, min(cap, left)) if item == "isic" else None
        print(f"{time.perf_counter() - started:6.0f} s  {item}: up to {min(cap, left):.0f} s"
              + (f", {epochs} epochs" if epochs else ""), flush=True)
        results["items"][item] = child(item, args, work, min(cap, left), epochs)
        print(f"{time.perf_counter() - started:6.0f} s  {item}: exit {results['items'][item]['exit']}",
              flush=True)
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
