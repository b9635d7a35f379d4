"""Determinism probe: does a tiny training run reproduce bit for bit, and what changes it?

    PYTHONPATH=$PWD python benchmarks/determinism.py matrix --out /tmp/det      # (a)-(c)
    PYTHONPATH=$PWD python benchmarks/determinism.py speed --out /tmp/det-speed # (d)
    PYTHONPATH=$PWD python benchmarks/determinism.py kernels --out /tmp/det-kernels

``matrix`` runs ``run_benchmark`` on a tiny config (EfficientNet-B0, 32 px, 2 epochs,
20 training and 20 test images per class, random initial weights) once per setting, each in
a fresh process (``TF_ENABLE_ONEDNN_OPTS`` is read when TensorFlow is imported), and compares
the ``predictions.csv`` files with the first run: bitwise equal, largest |difference| and the
AUC. ``kernels`` compares single op outputs while oneDNN is capped to older instruction
sets (``ONEDNN_MAX_CPU_ISA``), a stand-in for a CPU without AVX-512. ``speed`` times
steady-state training steps of the same model at 64 px under each
setting, alternating settings so that load on a shared machine hits them alike. Findings
are written up in docs/determinism.md. An investigation script, not part of the harness.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = {
    "name": "determinism", "seed": 42,
    "data": {"val_fraction": 0.15, "interpolation": "nearest",
             "synthetic": {"n_train_per_class": 20, "n_test_per_class": 20, "image_size": 64,
                           "seed": 1234}},
    "defaults": {"backbone": "B0", "image_size": 32, "weights": "none", "epochs": 2,
                 "learning_rate": 1e-3, "batch_size": 8, "val_batch_size": 16,
                 "head_units": 16, "bn_momentum": 0.8},
    "evaluation": {"bootstrap_resamples": 50, "audit": False},
    "variants": [{"name": "tiny_samplewise", "preprocessing": "samplewise"}],
}

# (key, label, TF_ENABLE_ONEDNN_OPTS, threads or None for TF's default, op determinism,
#  ONEDNN_MAX_CPU_ISA or "" for oneDNN's own choice)
MATRIX = (
    ("A", "onednn=1 default-threads", "1", None, True, ""),
    ("A2", "onednn=1 default-threads (repeat)", "1", None, True, ""),
    ("B", "onednn=0 default-threads", "0", None, True, ""),
    ("B2", "onednn=0 default-threads (repeat)", "0", None, True, ""),
    ("C", "onednn=1 threads=1", "1", 1, True, ""),
    ("D", "onednn=1 threads=2", "1", 2, True, ""),
    ("E", "onednn=0 threads=1", "0", 1, True, ""),
    ("F", "onednn=0 threads=2", "0", 2, True, ""),
    ("G", "onednn=1 default-threads, no op determinism", "1", None, False, ""),
    ("G2", "onednn=1 default-threads, no op determinism (repeat)", "1", None, False, ""),
    ("H", "proposed: onednn=0 threads=2 isa=AVX2", "0", 2, True, "AVX2"),
    ("H2", "proposed: onednn=0 threads=2 isa=AVX2 (repeat)", "0", 2, True, "AVX2"),
)
SPEED = (  # (label, TF_ENABLE_ONEDNN_OPTS, threads, op determinism, ONEDNN_MAX_CPU_ISA)
    ("default: onednn=1, TF threads, op determinism off", "1", None, False, ""),
    ("harness today: onednn=1, op determinism on", "1", None, True, ""),
    ("onednn=0, threads=2, op determinism on", "0", 2, True, ""),
    ("proposed: onednn=0, threads=2, isa=AVX2, op determinism on", "0", 2, True, "AVX2"),
    ("onednn=0, threads=1, op determinism on", "0", 1, True, ""),
)


def configure(threads: int | None, op_determinism: bool) -> dict:
    """Import TensorFlow (after the caller set the environment) and apply the settings."""
    import tensorflow as tf

    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if not op_determinism:  # the runner always enables it on CPU: make that call a no-op
        tf.config.experimental.enable_op_determinism = lambda: None
    else:
        tf.config.experimental.enable_op_determinism()
    return {"onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter": tf.config.threading.get_inter_op_parallelism_threads(),
            "op_determinism": op_determinism, "tf": tf.__version__}


def worker_run(out: Path, threads: int | None, op_determinism: bool) -> None:
    """One tiny run_benchmark into ``out``; writes ``out/meta.json``."""
    meta = configure(threads, op_determinism)
    from melanoma import config
    from melanoma.runs.benchmark import run_benchmark

    cfg = config.from_dict(TINY)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="det-models-") as models:
        run_benchmark(cfg, out_dir=out, models_dir=Path(models), retrain=True)
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def worker_speed(out: Path, threads: int | None, op_determinism: bool, steps: int) -> None:
    """Seconds per training step of B0 at 64 px, batch 16, after two warm-up epochs."""
    meta = configure(threads, op_determinism)
    import keras
    import numpy as np

    from melanoma.models.factory import build_classifier
    from melanoma.models.training import compile_classifier

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16 * steps, 64, 64, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 16 * steps)]
    model = compile_classifier(build_classifier("B0", 64, "none", 16, bn_momentum=0.8), 1e-3)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)  # trace + warm up
    started = time.perf_counter()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    meta["seconds_per_step"] = (time.perf_counter() - started) / (3 * steps)
    meta["jit_compile"] = str(model.jit_compile)
    (out / "speed.json").write_text(json.dumps(meta, indent=1))


KERNEL_ISAS = ("", "AVX512_CORE", "AVX2", "SSE41")  # "" = oneDNN's own choice for this CPU


def worker_kernels(out: Path) -> None:
    """Hash of a few op outputs (matmul, conv forward and backward, depthwise conv) under the
    current environment: ONEDNN_MAX_CPU_ISA caps the instruction set oneDNN dispatches to,
    which imitates a CPU without AVX-512 on this one."""
    import numpy as np
    import tensorflow as tf

    x = tf.random.stateless_normal((8, 32, 32, 16), seed=[1, 2])
    w = tf.random.stateless_normal((3, 3, 16, 32), seed=[3, 4])
    dw = tf.random.stateless_normal((3, 3, 16, 1), seed=[5, 6])
    a = tf.random.stateless_normal((300, 200), seed=[7, 8])
    with tf.GradientTape() as tape:
        tape.watch(w)
        y = tf.nn.conv2d(x, w, 1, "SAME")
        loss = tf.reduce_sum(y * y)
    outputs = {"matmul": tf.matmul(a, a, transpose_b=True), "conv": y,
               "conv_grad": tape.gradient(loss, w),
               "depthwise": tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME")}
    arrays = {k: v.numpy().astype(np.float32) for k, v in outputs.items()}
    np.savez(out / "kernels.npz", **arrays)


def kernels(out: Path) -> None:
    import numpy as np

    runs = []
    for onednn in ("1", "0"):
        for isa in KERNEL_ISAS:
            folder = out / f"k{onednn}{isa or 'default'}"
            folder.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("ONEDNN_MAX_CPU_ISA", None)
            if isa:
                env["ONEDNN_MAX_CPU_ISA"] = isa
            subprocess.run([sys.executable, __file__, "kernels-worker", "--out", str(folder)],
                           env=env, check=True)
            runs.append((onednn, isa or "default", dict(np.load(folder / "kernels.npz"))))
    refs = {onednn: arrays for onednn, isa, arrays in runs if isa == "default"}
    names = list(refs["1"])
    lines = ["| TF_ENABLE_ONEDNN_OPTS | ONEDNN_MAX_CPU_ISA | "
             + " | ".join(names) + " |", "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for onednn, isa, arrays in runs:  # max |difference| against the same oneDNN setting, no cap
        diffs = [float(np.max(np.abs(arrays[k] - refs[onednn][k]))) for k in names]
        lines.append(f"| {onednn} | {isa} | " + " | ".join(f"{d:.3g}" for d in diffs) + " |")
    between = [float(np.max(np.abs(refs["0"][k] - refs["1"][k]))) for k in names]
    lines.append("| 0 vs 1 | default | " + " | ".join(f"{d:.3g}" for d in between) + " |")
    (out / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def launch(mode: str, out: Path, onednn: str, threads, op_det: bool, isa: str = "",
           extra=()) -> None:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    cmd = [sys.executable, __file__, mode, "--out", str(out),
           *(["--threads", str(threads)] if threads else []),
           *([] if op_det else ["--no-op-determinism"]), *extra]
    subprocess.run(cmd, env=env, check=True)


def compare(first: Path, other: Path) -> dict:
    """Bitwise equality and the largest probability difference of two predictions.csv."""
    import numpy as np
    import pandas as pd

    from melanoma.evaluation import metrics

    a, b = (pd.read_csv(p / "predictions.csv") for p in (first, other))
    pa, pb = a["prob_malignant"].to_numpy(), b["prob_malignant"].to_numpy()
    digest = hashlib.sha256((other / "predictions.csv").read_bytes()).hexdigest()[:12]
    return {"sha256": digest, "bitwise_equal_to_first": bool(np.array_equal(pa, pb)),
            "max_abs_diff": float(np.max(np.abs(pa - pb))),
            "auc": metrics.binary_metrics(b["label"].to_numpy(), pb)["auc"]}


def matrix(out: Path, keys: list[str] | None = None) -> None:
    """Run the chosen rows (all by default); the first chosen row is the reference."""
    rows = [r for r in MATRIX if keys is None or r[0] in keys]
    for key, _, onednn, threads, op_det, isa in rows:
        if not (out / f"run{key}" / "meta.json").exists():  # rows already run are reused
            launch("worker", out / f"run{key}", onednn, threads, op_det, isa)
    first = out / f"run{rows[0][0]}"
    ref = rows[0][0]
    lines = [f"| setting | sha256 | bitwise = {ref} | max abs diff vs {ref} | AUC | wall s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, label, *_ in rows:
        folder = out / f"run{key}"
        c = compare(first, folder)
        meta = json.loads((folder / "meta.json").read_text())
        lines.append(f"| {key} {label} (intra {meta['intra']}, inter {meta['inter']}) "
                     f"| {c['sha256']} | {c['bitwise_equal_to_first']} | {c['max_abs_diff']:.3g} "
                     f"| {c['auc']:.4f} | {meta['wall_seconds']} |")
    (out / "matrix.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def speed(out: Path, rounds: int, steps: int) -> None:
    times = {label: [] for label, *_ in SPEED}
    for r in range(rounds):  # interleaved, so background load falls on every setting
        for i, (label, onednn, threads, op_det, isa) in enumerate(SPEED):
            folder = out / f"r{r}s{i}"
            launch("speed-worker", folder, onednn, threads, op_det, isa, ["--steps", str(steps)])
            times[label].append(json.loads((folder / "speed.json").read_text()))
    base = min(t["seconds_per_step"] for t in times[SPEED[0][0]])
    lines = ["| setting | s/step (min over rounds) | all rounds | ratio to default | jit |",
             "| --- | --- | --- | --- | --- |"]
    for label, runs in times.items():
        values = [t["seconds_per_step"] for t in runs]
        lines.append(f"| {label} | {min(values):.4f} | {', '.join(f'{v:.4f}' for v in values)}"
                     f" | {min(values) / base:.2f} | {runs[0]['jit_compile']} |")
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("matrix", "speed", "kernels", "worker", "speed-worker",
                                         "kernels-worker"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-op-determinism", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rows", default=None,
                        help="matrix rows to run, comma-separated keys (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "matrix":
        matrix(args.out, args.rows.split(",") if args.rows else None)
    elif args.mode == "speed":
        speed(args.out, args.rounds, args.steps)
    elif args.mode == "kernels":
        kernels(args.out)
    elif args.mode == "kernels-worker":
        worker_kernels(args.out)
    elif args.mode == "worker":
        worker_run(args.out, args.threads, not args.no_op_determinism)
    else:
        worker_speed(args.out, args.threads, not args.no_op_determinism, args.steps)


if __name__ == "__main__":
    main()
