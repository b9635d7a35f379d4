"""Performance suite: every figure a ratio of two things measured side by side in ONE process.

    python -m benchmarks.perf                    # P1-P4 (+ GPU figures when a GPU is visible)
    python -m benchmarks.perf --skip-main-job    # P1-P3 only (P4 runs the ~4 min main job)
    python -m benchmarks.perf --report-only      # perf.md again from the saved perf.json

Writes reports/perf/perf.json and perf.md: each figure with its target and verdict; perf.md
is made from perf.json as saved, so it can be rebuilt without measuring anything.
Timings on a shared machine are noisy, so the two sides of each ratio are measured in
alternating rounds (A, B, A, B, ...) and the median rate of each side is compared: load
that comes and goes hits both sides alike.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from melanoma.data import synthetic
from melanoma.data.augmentation import Augmentation
from melanoma.util import atomic, backend, provenance

# Same JPEGs for both sides of P1; 300 px like the public data set's images.
PERF_DATA = synthetic.SyntheticSpec(n_train_per_class=100, n_test_per_class=250,
                                    image_size=300, seed=4321)
P1_SIZE, P1_BATCH = 224, 32  # the target (>= 4x) is judged at 224 px
P1_SIZES = (224, 528)  # 528 px (the paper's B6 size) is reported beside it
P2_SIZE, P2_BATCH = 64, 32  # the default main job's model (B0 at 64 px)
AUGMENTATION = Augmentation(rotation_deg=20.0, shear_deg=0.2, horizontal_flip=True,
                            vertical_flip=True)
ROUNDS = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Figure:
    """One line of the perf report."""

    name: str
    what: str
    value: float | None
    unit: str
    target: str
    holds: bool | None  # None: skipped
    details: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.holds is None:
            return "reported" if self.value is not None else "skipped"
        return "holds" if self.holds else "MISSED"


def alternate(sides: dict, rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Call each side once per round, in turn; each call returns a rate. Rates per side."""
    rates = {name: [] for name in sides}
    for _ in range(rounds):
        for name, measure in sides.items():
            rates[name].append(measure())
    return rates


# P1 -----------------------------------------------------------------------------------

def legacy_epoch_rate(root: Path, size: int, batch: int, seed: int = 0):
    """A measure() for tf_keras ImageDataGenerator.flow_from_directory, one epoch per call."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rescale=1 / 255, samplewise_center=True,
                                   rotation_range=AUGMENTATION.rotation_deg,
                                   shear_range=AUGMENTATION.shear_deg,
                                   horizontal_flip=True, vertical_flip=True)
    flow = generator.flow_from_directory(str(root), target_size=(size, size), batch_size=batch,
                                         class_mode="categorical", interpolation="nearest",
                                         shuffle=True, seed=seed)

    def measure() -> float:
        started, seen = time.perf_counter(), 0
        for _ in range(len(flow)):
            x, _ = next(flow)
            seen += len(x)
        return seen / (time.perf_counter() - started)

    return measure, flow.samples


def pipeline_epoch_rate(pixels, labels, batch: int, epochs: int = 3):
    """A measure() for our input path over the decoded uint8 cache: the loader's batches
    through the model's input layer in training mode (cast, warp, samplewise), compiled as
    a model step is; one untimed warm-up epoch, then ``epochs`` timed epochs."""
    import keras

    from melanoma.data.loader import array_batches
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models.image_input import ImageInput

    layer = ImageInput(augment=True, seed=0)
    layer.configure(AUGMENTATION, get_preprocessing("samplewise"))
    images = keras.Input(pixels.shape[1:], dtype="uint8")
    step = keras.Model(images, layer(images, training=True))
    data = array_batches(pixels, labels, batch, shuffle=True, seed=0, repeat=True)
    batches, position = data.batches_per_epoch, [0]

    def epoch() -> int:
        seen = 0
        for _ in range(batches):
            x, _ = data[position[0]]
            position[0] += 1
            seen += int(keras.ops.shape(step.predict_on_batch(x))[0])
        return seen

    def measure() -> float:
        epoch()  # warm-up: traces, thread pools
        started = time.perf_counter()
        seen = sum(epoch() for _ in range(epochs))
        return seen / (time.perf_counter() - started)

    return measure


def p1_input_pipeline(root: Path, size: int = P1_SIZE) -> Figure:
    """Our pipeline vs flow_from_directory: same JPEGs, size, batch and augmentation."""
    from melanoma.data import layout
    from melanoma.data.decode import load_images

    found = layout.discover(root)
    started = time.perf_counter()
    decoded = load_images(found.train.files, found.train.labels, size, "nearest")
    decode_seconds = time.perf_counter() - started
    ours = pipeline_epoch_rate(decoded.pixels, decoded.labels, P1_BATCH)
    legacy, n_legacy = legacy_epoch_rate(root / "train", size, P1_BATCH)
    ours(), legacy()  # warm-up epoch each: tracing, thread pools, file cache
    rates = alternate({"ours": ours, "legacy": legacy})
    mine, theirs = statistics.median(rates["ours"]), statistics.median(rates["legacy"])
    n = len(decoded.labels)
    first_epoch = n / (decode_seconds + n / mine)
    judged = size == P1_SIZE
    return Figure(
        "P1" if judged else f"P1 at {size} px",
        "input pipeline throughput vs tf_keras ImageDataGenerator.flow_from_directory "
        f"({n} JPEGs {PERF_DATA.image_size}px -> {size}px, batch {P1_BATCH}, rotation, shear, "
        "both flips, samplewise; steady-state epochs: ours decodes once into a uint8 cache, "
        "that decode is excluded and reported separately)",
        mine / theirs, "x", ">= 4" if judged else "reported", mine / theirs >= 4 if judged else None,
        {"ours_images_per_s": mine, "legacy_images_per_s": theirs, "rounds": rates,
         "legacy_images": n_legacy, "decode_once_seconds": decode_seconds,
         "first_epoch_incl_decode_ratio": first_epoch / theirs})


# P2 -----------------------------------------------------------------------------------

def build_small_model():
    """The default main job's network: B0 at 64 px, random weights, compiled as the runner does."""
    import keras

    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models.factory import build_classifier
    from melanoma.models.image_input import with_image_input
    from melanoma.models.training import compile_classifier

    keras.utils.set_random_seed(0)
    network = build_classifier("B0", P2_SIZE, "none", 128, bn_momentum=0.9)
    return compile_classifier(with_image_input(network, AUGMENTATION,
                                               get_preprocessing("samplewise"), 0), 1e-3)


def p2_training_feed(pixels, labels, model) -> Figure:
    """fit() fed by the loader (uint8 rows, read ahead by threads) vs fit() on the same
    uint8 batches held in memory as arrays; augmentation runs in the model either way."""
    from melanoma.data.loader import array_batches

    fed = array_batches(pixels, labels, P2_BATCH, shuffle=True, seed=0, drop_remainder=True,
                        repeat=True)
    steps = fed.batches_per_epoch
    xs, ys = zip(*[fed[i] for i in range(steps)])
    x_mem, y_mem = np.concatenate(xs), np.concatenate(ys)
    n = len(x_mem)

    def rate(loader: bool):
        def measure() -> float:
            started = time.perf_counter()
            if loader:
                model.fit(fed, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
            else:
                model.fit(x_mem, y_mem, batch_size=P2_BATCH, epochs=1, verbose=0,
                          shuffle=False)
            return n / (time.perf_counter() - started)
        return measure

    rate(True)(), rate(False)()  # warm-up: traces the training step once
    rates = alternate({"pipeline": rate(True), "in_memory": rate(False)})
    piped, held = statistics.median(rates["pipeline"]), statistics.median(rates["in_memory"])
    return Figure(
        "P2", f"training throughput fed by the pipeline vs the same tensors in memory "
        f"(EfficientNet-B0 {P2_SIZE}px, batch {P2_BATCH}, {n} images per epoch)",
        piped / held, "x", ">= 0.95", piped / held >= 0.95,
        {"pipeline_images_per_s": piped, "in_memory_images_per_s": held, "rounds": rates})


# P3 -----------------------------------------------------------------------------------

def full_evaluation(model, test, root: Path, out_dir: Path) -> None:
    """What the runner does after training: predict, every metric with intervals, plots,
    report files, via the runner's own functions (so later additions are timed too)."""
    import pandas as pd

    from melanoma.data.loader import array_batches
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.evaluation import metrics
    from melanoma.reporting import run_report as report
    from melanoma.util.names import relative_name as relative

    prep = get_preprocessing("samplewise")
    probs = model.predict(array_batches(test.pixels, None, 64), verbose=0)[:, 1]
    probs = probs.astype(np.float64)
    frame = pd.DataFrame({"variant": "perf_b0_samplewise",
                          "file": [relative(f, root) for f in test.files],
                          "label": test.labels, "prob_malignant": probs})
    metrics.bootstrap_ci(test.labels, probs)  # every metric's interval (report rows may lack them)
    info = provenance.collect({"name": "perf"}, 0, backend.devices())
    history = {"loss": [0.7, 0.6], "val_loss": [0.7, 0.65], "accuracy": [0.5, 0.6],
               "val_accuracy": [0.5, 0.55], "auc": [0.5, 0.6], "val_auc": [0.5, 0.6]}
    report.write_run(out_dir, frame, {"perf_b0_samplewise": {"spec": prep.describe()}},
                     {"perf_b0_samplewise": history}, info)


def p3_evaluation(model, test, root: Path) -> Figure:
    """Full evaluation time vs bare model.predict on the same images."""
    from melanoma.data.loader import array_batches

    out = Path(tempfile.mkdtemp(prefix="melanoma-perf-eval-"))

    def bare() -> float:
        started = time.perf_counter()
        model.predict(array_batches(test.pixels, None, 64), verbose=0)
        return time.perf_counter() - started

    def full() -> float:
        started = time.perf_counter()
        full_evaluation(model, test, root, out)
        return time.perf_counter() - started

    bare(), full()  # warm-up: predict trace, matplotlib fonts
    times = alternate({"full": full, "bare_predict": bare})
    full_s, bare_s = statistics.median(times["full"]), statistics.median(times["bare_predict"])
    ratio = full_s / bare_s
    written = sorted(p.name for p in out.iterdir())
    return Figure(
        "P3", f"full evaluation (predict, all metrics, bootstrap intervals, plots, report "
        f"files via melanoma.reporting.run_report.write_run) vs bare model.predict ({len(test.labels)} test "
        f"images, B0 {P2_SIZE}px)", ratio, "x", "<= 1.2", ratio <= 1.2,
        {"seconds": times, "fixed_overhead_seconds": full_s - bare_s,
         "files_written": written})


# P4 -----------------------------------------------------------------------------------

def p4_main_job(timeout_s: int = 1200) -> Figure:
    """`melanoma-bench run` (default config, fresh models folder) as a child process."""
    with tempfile.TemporaryDirectory(prefix="melanoma-perf-main-") as tmp:
        command = [sys.executable, "-m", "melanoma.cli.main", "run", "--out", f"{tmp}/out",
                   "--models-dir", f"{tmp}/models"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        seconds = time.perf_counter() - started
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    ok = done.returncode == 0
    details = {"seconds": seconds, "peak_rss_gb": peak_gb, "exit_code": done.returncode,
               "command": "melanoma-bench run (default config, fresh models folder)",
               "peak_note": "ru_maxrss of the largest child of this process: the main job "
                            "(the only other children are short git calls for provenance)"}
    if not ok:
        details["stderr_tail"] = done.stderr[-2000:]
    return Figure("P4", "default main job: wall time (min) and peak memory (GB), 2 cores",
                  seconds / 60, "min", "<= 5 min and <= 4 GB",
                  ok and seconds <= 300 and peak_gb <= 4, details)


# GPU ----------------------------------------------------------------------------------

def gpu_b6(batch: int = 16, steps: int = 10) -> list[Figure]:
    """B6 at 528: train and infer images/s, with and without mixed precision and XLA."""
    import keras
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return [Figure("GPU", "B6 at 528 px train/infer images/s (fp32/mixed x XLA off/on)",
                       None, "images/s", "measured only", None, {"reason": "no GPU visible"})]
    from melanoma.models.factory import build_classifier
    from melanoma.models.training import compile_classifier

    figures = []
    x = np.random.default_rng(0).uniform(0, 255, (batch, 528, 528, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(batch) % 2]
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    for policy in ("float32", "mixed_float16"):
        for xla in (False, True):
            keras.backend.clear_session()
            keras.mixed_precision.set_global_policy(policy)
            model = compile_classifier(build_classifier("B6", 528, "none", 256, bn_momentum=None), 1e-4,
                                       jit_compile=xla)
            model.fit(data.take(2), verbose=0)  # trace
            started = time.perf_counter()
            model.fit(data, verbose=0)
            train = batch * steps / (time.perf_counter() - started)
            model.predict(x, batch_size=batch, verbose=0)
            started = time.perf_counter()
            for _ in range(steps):
                model.predict(x, batch_size=batch, verbose=0)
            infer = batch * steps / (time.perf_counter() - started)
            figures.append(Figure(f"GPU {policy} xla={xla}", f"B6 528px batch {batch}", train,
                                  "train images/s", "measured only", True,
                                  {"train_images_per_s": train, "infer_images_per_s": infer}))
    keras.mixed_precision.set_global_policy("float32")
    return figures


# Suite --------------------------------------------------------------------------------

def run_perf(out_dir: Path = Path("reports/perf"), main_job: bool = True,
             only_p1: bool = False) -> list[Figure]:
    """Run P1-P4 (P4 optional) and the GPU figures, or P1 alone; write perf.json and perf.md."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    from melanoma.data import layout
    from melanoma.data.decode import load_images

    root = synthetic.ensure_dataset(PERF_DATA)
    found = layout.discover(root)
    figures = []
    load_before = os.getloadavg()
    for size in P1_SIZES:
        log(f"P1: input pipeline vs flow_from_directory at {size} px ...")
        figures.append(p1_input_pipeline(root, size))
        log(f"  {figures[-1].value:.2f}x")
    if only_p1:
        write_report(out_dir, figures, {"load_average_before": load_before,
                                        "load_average_after": os.getloadavg()})
        return figures
    train = load_images(found.train.files, found.train.labels, P2_SIZE, "nearest")
    test = load_images(found.test.files, found.test.labels, P2_SIZE, "nearest")
    model = build_small_model()
    log("P2: training fed by the pipeline vs in memory ...")
    # Throughput only: train and test images together make longer epochs (less per-fit overhead).
    figures.append(p2_training_feed(np.concatenate([train.pixels, test.pixels]),
                                    np.concatenate([train.labels, test.labels]), model))
    log(f"  {figures[-1].value:.3f}x")
    log("P3: full evaluation vs bare predict ...")
    figures.append(p3_evaluation(model, test, root))
    log(f"  {figures[-1].value:.2f}x")
    if main_job:
        log("P4: the default main job as a subprocess (about 4 min) ...")
        figures.append(p4_main_job())
        log(f"  {figures[-1].value:.2f} min, {figures[-1].details['peak_rss_gb']:.2f} GB")
    else:
        figures.append(Figure("P4", "default main job: wall time and peak memory", None, "min",
                              "<= 5 min and <= 4 GB", None, {"reason": "--skip-main-job"}))
    figures.extend(gpu_b6())
    write_report(out_dir, figures, {"load_average_before": load_before,
                                    "load_average_after": os.getloadavg()})
    return figures


def markdown(figures: list[Figure], info: dict) -> str:
    """The perf table: figure, value, target, verdict, what was measured."""
    from tabulate import tabulate

    def value(f: Figure) -> str:
        if f.value is None:
            return "-"
        if f.name == "P4":
            return f"{f.value:.2f} min, {f.details['peak_rss_gb']:.2f} GB"
        return f"{f.value:.3g} {f.unit}"

    rows = [[f.name, value(f), f.target, f.verdict, f.what] for f in figures]
    hw = info["hardware"]
    held = [f.name for f in figures if f.holds]
    missed = [f.name for f in figures if f.holds is False]
    return (f"# Performance suite\n\nMachine: {hw['cpu']} ({hw['cpu_count']} cores), GPUs: "
            f"{', '.join(hw['gpus']) or 'none'}; commit {info['git']['commit'][:12]}, "
            f"{info['date']}.\nEach ratio compares two measurements taken in alternating rounds "
            f"in one process (median of {ROUNDS} rounds each, after a warm-up). "
            f"Load average (1 min) before/after: {info['load_average_before'][0]:.1f}/"
            f"{info['load_average_after'][0]:.1f} on {hw['cpu_count']} cores.\n\n"
            + tabulate(rows, headers=["figure", "value", "target", "verdict", "what"],
                       tablefmt="github")
            + f"\n\nTargets held: {', '.join(held) or 'none'}; missed: {', '.join(missed) or 'none'}.\n")


def write_report(out_dir: Path, figures: list[Figure], extra: dict | None = None) -> None:
    """perf.json (figures, verdicts, provenance), then perf.md from what was saved."""
    info = provenance.collect({"perf_data": asdict(PERF_DATA)}, 0, backend.devices(), extra)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_dir / "perf.json", {
        "figures": [{**asdict(f), "verdict": f.verdict} for f in figures], "provenance": info})
    rebuild_report(out_dir)


def rebuild_report(out_dir: Path) -> list[Figure]:
    """perf.md from ``out_dir``'s perf.json alone (no measuring); the saved figures."""
    saved = json.loads((Path(out_dir) / "perf.json").read_text(encoding="utf-8"))
    figures = [Figure(**{k: v for k, v in f.items() if k != "verdict"}) for f in saved["figures"]]
    atomic.write_text(Path(out_dir) / "perf.md", markdown(figures, saved["provenance"]))
    return figures


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.perf [--out DIR] [--skip-main-job | --report-only]`` (``tox -e
    perf``): exit 0 when every measured target holds, 1 when one is missed, 2 without tf_keras."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("reports/perf"))
    parser.add_argument("--skip-main-job", action="store_true",
                        help="skip P4 (runs the default main job as a child process)")
    parser.add_argument("--only-p1", action="store_true",
                        help="only P1, at 224 px (judged) and 528 px (reported)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: write perf.md again from --out's perf.json")
    args = parser.parse_args(argv)
    if args.report_only:
        if not (args.out / "perf.json").is_file():
            print(f"benchmarks.perf: error: --report-only: no perf.json in {args.out} (run the "
                  "suite first, or name its folder with --out)", file=sys.stderr)
            return 2
        figures = rebuild_report(args.out)
        print((args.out / "perf.md").read_text(encoding="utf-8"))
        return 1 if any(f.holds is False for f in figures) else 0
    try:
        import tf_keras  # noqa: F401 - P1's baseline is the original ImageDataGenerator
    except ImportError:
        print("benchmarks.perf: error: P1 compares with tf_keras' ImageDataGenerator: "
              "pip install -e '.[perf]' (or `tox -e perf`)", file=sys.stderr)
        return 2
    figures = run_perf(args.out, main_job=not args.skip_main_job, only_p1=args.only_p1)
    print((args.out / "perf.md").read_text(encoding="utf-8"))
    return 1 if any(f.holds is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
