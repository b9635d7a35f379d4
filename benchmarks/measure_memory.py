"""Peak memory and time to first batch: today's in-memory input vs the decoded-image cache.

    PYTHONPATH=. python benchmarks/measure_memory.py                # 600, 1800, 5400 at 528 px
    PYTHONPATH=. python benchmarks/measure_memory.py --sizes 600 --image-size 128 --out /tmp/m

Every measurement is its own child process, so its peak RSS (``ru_maxrss``, with the
high-water mark after each stage from /proc/self/status) is that step's alone:
  inmemory  load_splits + make_dataset + one epoch (+ the featurewise fit, small sets only)
  prepare   building the cache of train/ and test/ (no TensorFlow, as ``prepare`` would run)
  stream    warm: open the caches (decodes nothing), chunked featurewise mean, one streamed
            training epoch with augmentation, one prediction pass over val and test
  cold      empty cache folder: build, then the first streamed batch (time to first batch)
The data: synthetic 300 px JPEGs (like the public set's) hard-linked N times. Writes
``<out>/memory.json`` and ``memory.md``: per-step peaks, slopes as a fraction of the decoded
bytes, and the projection for the public data set (11,879 + 2,000 images).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAPER_IMAGES = 11_879 + 2_000
GOAL_FRACTION, GOAL_GB = 0.1, 6.0
SOURCE = {"n_train_per_class": 100, "n_test_per_class": 50, "image_size": 300, "seed": 4321}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# child side ----------------------------------------------------------------------------

class Stages:
    """Wall time and peak RSS after each named stage of one child process."""

    def __init__(self):
        self.started, self.rows = time.perf_counter(), {}

    def mark(self, name: str, **extra) -> None:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                      .splitlines() if ":" in line)
        kb = {k: int(status[k].split()[0]) for k in ("VmHWM", "RssAnon", "RssFile")}
        self.rows[name] = {"seconds": round(time.perf_counter() - self.started, 2),
                           "peak_rss_gb": kb["VmHWM"] / 2**20, "rss_anon_gb": kb["RssAnon"] / 2**20,
                           "rss_file_gb": kb["RssFile"] / 2**20, **extra}
        log(f"    {name}: {self.rows[name]}")

    def result(self) -> dict:
        return {"stages": self.rows,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _paper():
    from melanoma import config as config_mod

    cfg = config_mod.load("paper")
    return cfg, cfg.variants[0]


def child_inmemory(root: Path, size: int, featurewise: bool, **_) -> dict:
    """The design being replaced: every image decoded into one array (load_images), the
    train/val split as copies, then make_dataset's from_tensor_slices."""
    from melanoma.data import layout
    from melanoma.data.decode import load_images
    from melanoma.data.pipeline import make_dataset, split_train_val
    from melanoma.data.preprocessing import get_preprocessing

    stages, (cfg, variant) = Stages(), _paper()
    found = layout.discover(root)
    train_all = load_images(found.train.files, found.train.labels, size, cfg.data.interpolation)
    load_images(found.test.files, found.test.labels, size, cfg.data.interpolation)
    train_index, _ = split_train_val(train_all.labels, cfg.data.val_fraction, cfg.seed)
    train_pixels, train_labels = train_all.pixels[train_index], train_all.labels[train_index]
    stages.mark("decoded")
    data = make_dataset(train_pixels, train_labels, variant.batch_size,
                        get_preprocessing("samplewise"), variant.augmentation, shuffle=True,
                        seed=cfg.seed)
    batches = iter(data)
    next(batches)
    stages.mark("first_batch")
    stages.mark("epoch", images=sum(int(x.shape[0]) for x, _ in batches) + variant.batch_size)
    if featurewise:
        get_preprocessing("featurewise").fit(train_pixels)
        stages.mark("featurewise_fit")
    return stages.result()


def child_prepare(root: Path, size: int, cache_dir: Path, **_) -> dict:
    """What ``melanoma-bench prepare`` would do: build the caches, no TensorFlow."""
    import logging

    from melanoma.data import cache, layout

    logging.basicConfig(level=logging.INFO, format="    %(message)s")
    stages = Stages()
    train, test = cache.open_layout(layout.discover(root), size, "nearest", cache_dir)
    stages.mark("built", images=len(train) + len(test))
    return stages.result()


def child_stream(root: Path, size: int, cache_dir: Path, train_steps: int = 0,
                 first_only: bool = False, **_) -> dict:
    """Open (or build) the caches and stream: first batch, epoch, prediction pass."""
    from melanoma.data import cache, layout
    from melanoma.data.pipeline import split_train_val
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.data.stream import make_stream_dataset

    stages, (cfg, variant), decodes, real = Stages(), _paper(), [], cache._try_load
    cache._try_load = lambda *args: decodes.append(1) or real(*args)  # count decodes
    train, test = cache.open_layout(layout.discover(root), size, "nearest", cache_dir)
    stages.mark("opened", decoded_images=len(decodes))
    train_idx, val_idx = split_train_val(train.labels, cfg.data.val_fraction, cfg.seed)
    prep = get_preprocessing("samplewise")
    data = make_stream_dataset(train, train_idx, train.labels[train_idx], variant.batch_size,
                               prep, variant.augmentation, shuffle=True, seed=cfg.seed)
    batches = iter(data)
    next(batches)
    stages.mark("first_batch")
    if first_only:
        return stages.result()
    stages.mark("epoch", images=sum(int(x.shape[0]) for x, _ in batches) + variant.batch_size)
    cache.fit_preprocessing(get_preprocessing("featurewise"), train, train_idx)
    stages.mark("featurewise_fit")
    for part, idx in ((train, val_idx), (test, np.arange(len(test)))):
        for _ in make_stream_dataset(part, idx, None, variant.val_batch_size, prep):
            pass
    stages.mark("prediction_inputs", images=len(val_idx) + len(test))
    if train_steps:
        _train_steps(data, size, train_steps)
        stages.mark("train_steps", steps=train_steps)
    return stages.result()


def _train_steps(data, size: int, steps: int) -> None:
    """A few B0 training steps on streamed batches (the model's own memory on top)."""
    from melanoma.models.factory import build_classifier

    model = build_classifier("B0", size, "none", 256, 0.2, False, 0.99)
    model.compile("adam", "categorical_crossentropy")
    model.fit(data.take(steps), epochs=1, verbose=0)


def child_scan(root: Path, size: int, cache_dir: Path, via: str = "pread", **_) -> dict:
    """Read every training row once: through the memmap, or with pread (what the cache uses)."""
    from melanoma.data import cache, layout

    stages = Stages()
    train, _ = cache.open_layout(layout.discover(root), size, "nearest", cache_dir)
    if via == "memmap":
        pixels, step = train.pixels, max(1, cache.CHUNK_BYTES // train.row_bytes)
        for start in range(0, len(train), step):
            np.asarray(pixels[start:start + step]).reshape(-1, 3).sum(0, dtype=np.uint64)
    else:
        train.channel_mean()
    stages.mark(f"scan_{via}", bytes_gb=len(train) * train.row_bytes / 2**30)
    return stages.result()


def child_gather(root: Path, size: int, cache_dir: Path, rounds: int = 3, **_) -> dict:
    """Images/s of one epoch without augmentation: numpy_function gather (what stream.py
    does) vs a Python generator vs from_tensor_slices of in-memory pixels; alternating."""
    import tensorflow as tf

    from melanoma.data import cache, layout
    from melanoma.data.pipeline import make_dataset
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.data.stream import make_stream_dataset

    train, _ = cache.open_layout(layout.discover(root), size, "nearest", cache_dir)
    idx, prep = np.arange(len(train)), get_preprocessing("native")

    def generator():
        order = np.random.default_rng(0).permutation(idx)
        for start in range(0, len(order), 16):
            yield train.read_rows(order[start:start + 16])

    spec = tf.TensorSpec([None, size, size, 3], tf.uint8)
    sides = {"numpy_function": make_stream_dataset(train, idx, None, 16, prep, shuffle=True),
             "generator": tf.data.Dataset.from_generator(generator, output_signature=spec).map(
                 lambda x: prep.apply(tf.cast(x, tf.float32)),
                 num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE),
             "in_memory": make_dataset(train.read_rows(idx), None, 16, prep, shuffle=True)}
    rates = {name: [] for name in sides}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for name, data in sides.items():
            started = time.perf_counter()
            seen = sum(int(x.shape[0]) for x in data)
            rates[name].append(seen / (time.perf_counter() - started))
    return {"images_per_s": {k: round(statistics.median(v[1:]), 1) for k, v in rates.items()},
            "rounds": rounds}


MODES = ("inmemory", "prepare", "stream", "cold", "extras")
CHILDREN = {"inmemory": child_inmemory, "prepare": child_prepare, "stream": child_stream,
            "cold": lambda **kw: child_stream(first_only=True, **kw), "scan": child_scan,
            "gather": child_gather}


# parent side ---------------------------------------------------------------------------

def make_folder(source: Path, dest: Path, n_images: int) -> Path:
    """``n_images`` hard links (85 % train, 15 % test, half per class) to the source JPEGs."""
    split_sizes = {"train": round(n_images * 0.85)}
    split_sizes["test"] = n_images - split_sizes["train"]
    for split, count in split_sizes.items():
        for label, name in enumerate(("Benign", "Malignant")):
            pool = sorted((source / split / name).glob("*.jpg"))
            folder = dest / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count // 2 + (label and count % 2)):
                link = folder / f"{name.lower()}_{i:06d}.jpg"
                try:
                    os.link(pool[i % len(pool)], link)
                except OSError:  # another filesystem: copy instead
                    link.write_bytes(pool[i % len(pool)].read_bytes())
    return dest


def run_child(mode: str, **kwargs) -> dict:
    """One measurement in a fresh Python process; its JSON result."""
    args = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
            "--child-args", json.dumps({k: str(v) if isinstance(v, Path) else v
                                        for k, v in kwargs.items()})]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    log(f"  {mode} {kwargs.get('size', '')} px, {Path(kwargs['root']).name}")
    started = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def decode_executors(files, size: int, work: Path, rounds: int = 3) -> dict:
    """Images/s decoding ``files`` into a cache with threads vs processes, alternating."""
    from melanoma.data import cache

    sides = {"threads_4": ("thread", 4), "threads_2": ("thread", 2), "serial": ("thread", 1),
             "processes_2": ("process", 2)}  # a process pool's start-up is in its time
    rates, labels = {name: [] for name in sides}, [0] * len(files)
    for _ in range(rounds):
        for name, (kind, workers) in sides.items():
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                started = time.perf_counter()
                cache.open_or_build(files, labels, size, "nearest", tmp, fingerprint=name,
                                    workers=workers, executor=kind)
                rates[name].append(len(files) / (time.perf_counter() - started))
    return {k: round(statistics.median(v), 1) for k, v in rates.items()}


# The stage whose peak a step's slope is fitted on; spikes that do not scale with the data
# (the in-memory featurewise fit's float64 copy, the model's own training memory) come
# after it and get their own rows.
SLOPE_STAGE = {"inmemory": "epoch", "stream": "prediction_inputs"}
SPIKES = {"inmemory": ("featurewise_fit", "inmemory + featurewise fit"),
          "stream": ("train_steps", "stream + B0 train steps")}


def step_peak(mode: str, result: dict) -> float:
    stage = SLOPE_STAGE.get(mode)
    return result["stages"][stage]["peak_rss_gb"] if stage else result["peak_rss_gb"]


def summarise(results: dict, size: int) -> dict:
    """Per step: least-squares peak_gb = intercept + slope * decoded_gb, and the projection
    to the public data set at ``size``."""
    paper = PAPER_IMAGES * size * size * 3 / 2**30
    out = {"decoded_gb_public_set": round(paper, 2)}
    for mode in ("inmemory", "prepare", "stream"):
        points = [(int(n) * size * size * 3 / 2**30, step_peak(mode, r[mode]))
                  for n, r in results.items() if mode in r]
        out[mode] = None
        if len(points) >= 2:
            slope, intercept = (float(v) for v in np.polyfit(*np.array(points).T, 1))
            projection = intercept + slope * paper
            out[mode] = {"slope": round(slope, 3), "intercept_gb": round(intercept, 2),
                         "projection_gb": round(projection, 2),
                         "holds": None if mode == "inmemory" else bool(  # the baseline
                             slope <= GOAL_FRACTION and projection <= GOAL_GB)}
    return out


def markdown(report: dict) -> str:
    size, lines = report["image_size"], []
    title = f"# Input memory at {size} px (GB = 2**30 bytes; machine shared: {report['uptime']})"
    lines += [title, "", "| images | decoded GB | step | peak RSS GB | child s | first batch s |",
              "|---|---|---|---|---|---|"]
    for n, steps in report["results"].items():
        for mode, r in steps.items():
            stages = r.get("stages", {})
            first = stages.get("first_batch", {}).get("seconds", "")
            rows = [(mode, step_peak(mode, r))]
            spike, label = SPIKES.get(mode, ("", ""))
            if spike in stages:
                rows.append((label, stages[spike]["peak_rss_gb"]))
            for name, peak in rows:
                lines.append(f"| {int(n):,} | {int(n) * size * size * 3 / 2**30:.2f} | {name} | "
                             f"{peak:.2f} | {r['wall_seconds']} | {first} |")
    lines += ["", ("Slopes (peak GB per decoded GB) and projection for 11,879 + 2,000 images "
                   f"(goal: slope <= {GOAL_FRACTION}, projection <= {GOAL_GB} GB):"), ""]
    for mode in ("inmemory", "prepare", "stream"):
        lines.append(f"- {mode}: {report['summary'].get(mode)}")
    lines += ["", f"Extras: {json.dumps(report['extras'])}", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[600, 1800, 5400])
    parser.add_argument("--image-size", type=int, default=528)
    parser.add_argument("--inmemory-max", type=int, default=1800,
                        help="largest set measured with the in-memory design (it needs ~2.2x "
                             "the decoded bytes; this machine is shared)")
    parser.add_argument("--featurewise-max", type=int, default=600,
                        help="largest set whose in-memory featurewise fit is measured (it "
                             "makes a float64 copy: 8x the training pixels)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="B0 training steps on streamed batches at the smallest size")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "perf")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default tmp)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="which measurements to run (prepare always runs; 'extras': "
                             "gather, decode executors, memmap vs pread scan)")
    parser.add_argument("--from-json", type=Path,
                        help="re-summarise a memory.json written before, measuring nothing")
    parser.add_argument("--child")
    parser.add_argument("--child-args")
    args = parser.parse_args(argv)
    if args.child:
        kwargs = json.loads(args.child_args)
        kwargs = {k: Path(v) if k in ("root", "cache_dir") else v for k, v in kwargs.items()}
        print(json.dumps(CHILDREN[args.child](**kwargs)))
        return
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        report["summary"] = summarise(report["results"], report["image_size"])
    else:
        with tempfile.TemporaryDirectory(dir=args.work) as work:
            report = measure(args, Path(work))
    from melanoma.util import atomic

    atomic.write_json(args.out / "memory.json", report)
    atomic.write_text(args.out / "memory.md", markdown(report))
    log(markdown(report))


def measure(args, work: Path) -> dict:
    """Every child for every set size; the largest set also gets the scan comparison."""
    from melanoma.data import synthetic

    source = synthetic.ensure_dataset(synthetic.SyntheticSpec(**SOURCE))
    size, results, extras = args.image_size, {}, {}
    for n in sorted(args.sizes):
        root = make_folder(source, work / f"data-{n}", n)
        common = {"root": root, "size": size}
        results[n] = steps = {}
        if "inmemory" in args.modes and n <= args.inmemory_max:
            steps["inmemory"] = run_child("inmemory", featurewise=n <= args.featurewise_max,
                                          **common)
        steps["prepare"] = run_child("prepare", cache_dir=work / f"cache-{n}", **common)
        if "stream" in args.modes:
            steps["stream"] = run_child("stream", cache_dir=work / f"cache-{n}", **common,
                                        train_steps=args.train_steps if n == min(args.sizes) else 0)
        if "cold" in args.modes:
            steps["cold"] = run_child("cold", cache_dir=work / f"cold-{n}", **common)
        if "extras" in args.modes and n == min(args.sizes):
            extras["gather"] = run_child("gather", cache_dir=work / f"cache-{n}", **common)
            files = sorted(root.rglob("*.jpg"))[:300]
            extras["decode_executors_images_per_s"] = decode_executors(files, size, work)
        if "extras" in args.modes and n == max(args.sizes):
            for via in ("memmap", "pread"):
                extras[f"scan_{via}"] = run_child("scan", via=via, cache_dir=work / f"cache-{n}",
                                                  **common)
        for folder in (f"cache-{n}", f"cold-{n}"):
            shutil.rmtree(work / folder, ignore_errors=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {"image_size": size, "uptime": uptime, "cpus": os.cpu_count(),
            "results": results, "summary": summarise(results, size), "extras": extras}


if __name__ == "__main__":
    main()
