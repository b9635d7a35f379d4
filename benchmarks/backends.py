"""JAX vs TensorFlow on the same work, side by side in one run: epoch time and peak memory.

    python benchmarks/backends.py --out /tmp/backends                   # both from this venv
    python benchmarks/backends.py --jax-python /work/jaxvenv/bin/python  # JAX without TF
    python benchmarks/backends.py --equivalence --seeds 1 2 3             # the tables agree?

Each round runs ``melanoma-bench run`` on the same generated data, config and seed once per
backend, each in its own process (alternating TF, JAX, TF, JAX, ...: a busy machine slows
both alike), with ``--retrain`` so every round trains. Per process: the epoch times the run
logs (the first epoch holds the compile; the steady figure is the median of the others),
the wall time and the peak resident memory (``ru_maxrss``). The ratios (JAX / TF) are of
medians over rounds. Writes ``backends.json`` and ``backends.md`` (with ``uptime``).

``--equivalence`` instead trains the shipped default config once per backend with the given
training seeds and judges each backend's seeds against the other's with the project's seed
gate (:func:`melanoma.evaluation.gate.check_values`: one-sided Welch tests of the seed means,
Holm over every variant and metric): the backends agree when no metric is flagged either way.
Writes ``equivalence.json`` and ``equivalence.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*\((\d+(?:\.\d+)?) s\)")
WRAPPER = """
import resource, sys
from melanoma.cli.main import main
code = main(sys.argv[1:])
print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
sys.exit(code)
"""
CONFIG = """name = "backends"
seed = 42
[data.synthetic]
n_train_per_class = {per_class}
n_test_per_class = 20
image_size = 96
[defaults]
backbone = "B0"
image_size = {size}
weights = "none"
epochs = {epochs}
batch_size = 32
val_batch_size = 64
learning_rate = 1e-3
head_units = 64
bn_momentum = 0.9
jit_compile = true
[defaults.augmentation]
rotation_deg = 20.0
shear_deg = 0.2
horizontal_flip = true
vertical_flip = true
[[variants]]
name = "b0_samplewise"
preprocessing = "samplewise"
"""


def one_run(backend: str, python: str, config: Path | str, work: Path, round_: int,
            extra: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT),
           "MELANOMA_DATA_CACHE": str(work / "data")}
    out = work / f"{backend}-{round_}"
    started = time.perf_counter()
    done = subprocess.run([python, "-c", WRAPPER, "run", "--config", str(config), "--retrain",
                           "--out", str(out), "--models-dir", str(work / f"models-{backend}"),
                           "--overwrite", *extra],
                          env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{backend} round {round_} failed:\n{done.stderr[-3000:]}")
    epochs = [float(s) for _, s in EPOCH_LINE.findall(done.stderr)]
    rss = float(done.stdout.split("PEAK_RSS_MB")[-1].split()[0])
    results = json.loads((out / "results.json").read_text())
    return {"backend": results["provenance"]["hardware"]["backend"],
            "backend_version": results["provenance"]["hardware"]["backend_version"],
            "epoch_s": epochs, "first_epoch_s": epochs[0],
            "steady_epoch_s": statistics.median(epochs[1:]) if len(epochs) > 1 else None,
            "wall_s": round(wall, 1), "peak_rss_mb": round(rss), "auc": float(
                results["rows"][0]["auc"]) if "rows" in results else None}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def summary(runs: list[dict]) -> dict:
    by = {b: [r for r in runs if r["backend"] == b] for b in ("tensorflow", "jax")}

    def median(backend, key):
        values = [r[key] for r in by[backend] if r[key] is not None]
        return statistics.median(values) if values else None

    figures = {}
    for key in ("steady_epoch_s", "first_epoch_s", "wall_s", "peak_rss_mb"):
        tf, jx = median("tensorflow", key), median("jax", key)
        figures[key] = {"tensorflow": tf, "jax": jx,
                        "jax_over_tf": round(jx / tf, 2) if tf and jx else None}
    return figures


def markdown(args, figures: dict, runs: list[dict], before: str, after: str) -> str:
    rows = "\n".join(f"| {k} | {v['tensorflow']} | {v['jax']} | {v['jax_over_tf']} |"
                     for k, v in figures.items())
    versions = {r["backend"]: r["backend_version"] for r in runs}
    return (f"Command: `python benchmarks/backends.py --rounds {args.rounds} --epochs "
            f"{args.epochs} --per-class {args.per_class} --size {args.size}`"
            f"{' --jax-python ' + args.jax_python if args.jax_python else ''}\n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; TensorFlow "
            f"{versions.get('tensorflow')}, JAX {versions.get('jax')}; B0 at {args.size} px, "
            f"random weights; JAX compiles the training step with XLA, TensorFlow trains the "
            f"augmenting model without it (its projective-transform op has no XLA kernel)."
            f"\n`uptime` before: {before}\n`uptime` after: {after}\n\n"
            "| median over rounds | TensorFlow | JAX | JAX / TF |\n|---|---|---|---|\n"
            f"{rows}\n")


def equivalence(args) -> int:
    """Both backends on the default config with ``args.seeds``; the seed gate both ways."""
    from melanoma.evaluation import gate
    from melanoma.reporting.saved import read_predictions

    seeds = "seeds=[" + ",".join(str(s) for s in args.seeds) + "]"
    before, runs, values = uptime(), [], {}
    for backend in ("tensorflow", "jax"):
        python = args.jax_python if backend == "jax" and args.jax_python else sys.executable
        runs.append(one_run(backend, python, "default", args.out.resolve(), 0, ("--set", seeds)))
        print(json.dumps(runs[-1]), flush=True)
        predictions = read_predictions(args.out / f"{backend}-0" / "predictions.csv")
        values[backend] = gate.seed_values(predictions, len(args.seeds))
    after = uptime()
    lines = []
    for base, now in (("tensorflow", "jax"), ("jax", "tensorflow")):
        for check in gate.check_values(values[base], values[now]):
            lines.append({"baseline": base, "judged": now, **check.__dict__})
    flagged = [x for x in lines if x["verdict"] in ("REGRESSED", "MISSING", "CHANGED")]
    (args.out / "equivalence.json").write_text(json.dumps(
        {"seeds": args.seeds, "checks": lines, "runs": runs, "uptime_before": before,
         "uptime_after": after}, indent=1, default=str))
    def num(value, fmt=".4f"):
        return "n/a" if value is None else format(value, fmt)

    table = "\n".join(
        f"| {x['judged']} vs {x['baseline']} | {x['variant']} | {x['metric']} | "
        f"{num(x['base_mean'])} | {num(x['current_mean'])} | {num(x['p_value'], '.3g')} | "
        f"{x['verdict']} |" for x in lines)
    versions = {r["backend"]: r["backend_version"] for r in runs}
    text = (f"Command: `python benchmarks/backends.py --equivalence --seeds "
            f"{' '.join(map(str, args.seeds))}`"
            f"{' --jax-python ' + args.jax_python if args.jax_python else ''}\n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; TensorFlow "
            f"{versions.get('tensorflow')}, JAX {versions.get('jax')}; the shipped default config "
            f"(B0 at 64 px, random weights), seeds {args.seeds}.\n`uptime` before: {before}\n"
            f"`uptime` after: {after}\nWall time: TensorFlow {runs[0]['wall_s']} s, JAX "
            f"{runs[1]['wall_s']} s; peak RSS {runs[0]['peak_rss_mb']} vs "
            f"{runs[1]['peak_rss_mb']} MB.\n\n"
            "| judged vs baseline | variant | metric | baseline mean | judged mean | p (worse) "
            "| verdict |\n|---|---|---|---|---|---|---|\n" + table + "\n\n"
            + (f"{len(flagged)} check(s) flagged.\n" if flagged else
               "No metric flagged either way: the backends agree within training noise.\n"))
    (args.out / "equivalence.md").write_text(text)
    print(text)
    return 1 if flagged else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/backends"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--jax-python", default=None, help="interpreter for JAX (default: this)")
    parser.add_argument("--equivalence", action="store_true",
                        help="the default config's tables on both backends, seed-gated both ways")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.equivalence:
        return equivalence(args)
    config = args.out / "backends.toml"
    config.write_text(CONFIG.format(per_class=args.per_class, size=args.size, epochs=args.epochs))
    before, runs = uptime(), []
    for round_ in range(args.rounds):
        for backend in ("tensorflow", "jax"):
            python = args.jax_python if backend == "jax" and args.jax_python else sys.executable
            runs.append(one_run(backend, python, config.resolve(), args.out.resolve(), round_))
            print(json.dumps(runs[-1]), flush=True)
    after = uptime()
    figures = summary(runs)
    (args.out / "backends.json").write_text(json.dumps(
        {"figures": figures, "runs": runs, "uptime_before": before, "uptime_after": after},
        indent=1))
    (args.out / "backends.md").write_text(markdown(args, figures, runs, before, after))
    print((args.out / "backends.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
