"""Simulations behind the seed-calibrated gate and the training-variance interval.

    PYTHONPATH=$PWD python benchmarks/simulate_gate.py --out reports/simulate_gate.md
    PYTHONPATH=$PWD python benchmarks/simulate_gate.py --quick      # about a tenth of the runs
    PYTHONPATH=$PWD python benchmarks/simulate_gate.py --parts BC --tau 0.5   # larger seed spread

Three parts, every number from melanoma.evaluation's own functions (variance, gate):
A. per-seed metric values drawn directly (2 variants x the 4 gated metrics = 8 checks,
   5 baseline and 5 new seeds): the false-alarm rate when nothing changed (normal, heavy
   tailed, occasional failed seeds, correlated metrics), and the power against a drop of
   X seed-SDs.
B. whole predictions on a 200-image test set (100 per class, as bench.toml), scored with the
   real metric code: false alarms and power when a variant's class separation drops.
C. coverage of variance.summarise's AUC interval for the mean over seeds, against the known
   population value, next to today's single-seed image-only interval.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from melanoma.evaluation import gate, variance

N_METRICS = len(gate.GATED)
SIGN = np.array([-1.0 if m in gate.LOWER_IS_BETTER else 1.0 for m in gate.GATED])


def _draw(rng, kind: str, shape, rho: float) -> np.ndarray:
    """Per-seed values (..., seeds, metrics) with unit spread, metrics correlated ``rho``."""
    cov = np.full((N_METRICS, N_METRICS), rho) + (1 - rho) * np.eye(N_METRICS)
    z = rng.multivariate_normal(np.zeros(N_METRICS), cov, shape)
    if kind == "t3":  # heavy tails: one chi-square scale per seed, shared by its metrics
        z = z / np.sqrt(rng.chisquare(3, shape)[..., None] / 3) / math.sqrt(3)
    elif kind == "failed-seeds":  # 10% of seeds are failed runs, 3 SD worse in every metric
        z = z - 3.0 * (rng.random(shape) < 0.10)[..., None] * SIGN
    return z


def alarm_rate(rng, runs: int, kind="normal", rho=0.8, shift=0.0, shifted=None,
               m=5, k=5, alpha=gate.FAMILY_ALPHA) -> float:
    """Share of runs with any failed check; ``shift`` SDs worse on the ``shifted`` metrics
    (default all four) of the first variant."""
    xs = _draw(rng, kind, (runs, 2, m), rho)
    ys = _draw(rng, kind, (runs, 2, k), rho)
    mask = np.ones(N_METRICS) if shifted is None else np.isin(gate.GATED, shifted)
    ys[:, 0] -= shift * SIGN * mask
    alarms = 0
    for run in range(runs):
        base = {f"v{v}": {"per_seed": dict(zip(gate.GATED, xs[run, v].T.tolist()))}
                for v in range(2)}
        now = {f"v{v}": {"per_seed": dict(zip(gate.GATED, ys[run, v].T.tolist()))}
               for v in range(2)}
        alarms += any(c.failed for c in gate.check_values(base, now, family_alpha=alpha))
    return alarms / runs


def ci(rate: float, runs: int) -> str:
    half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-9) / runs)
    return f"{rate:.3f} ± {half:.3f}"


def part_a(rng, runs: int) -> list[str]:
    lines = ["## A. Per-seed values drawn directly (8 checks: 2 variants x 4 metrics)", "",
             "| scenario | seeds base/new | rate of runs with any flag (95% MC interval) |",
             "| --- | --- | --- |"]
    null = [("normal, metrics independent", "normal", 0.0, 5, 5),
            ("normal, metrics correlated 0.8", "normal", 0.8, 5, 5),
            ("heavy-tailed (t, 3 df), corr 0.8", "t3", 0.8, 5, 5),
            ("10% failed seeds (-3 SD), corr 0.8", "failed-seeds", 0.8, 5, 5),
            ("normal, corr 0.8, one new seed", "normal", 0.8, 5, 1),
            ("normal, corr 0.8, 10 baseline seeds", "normal", 0.8, 10, 5)]
    for label, kind, rho, m, k in null:
        rate = alarm_rate(rng, runs, kind, rho, m=m, k=k)
        lines.append(f"| no change: {label} | {m}/{k} | {ci(rate, runs)} |")
    for shift in (1.0, 1.5, 2.0, 3.0, 4.0):
        rate = alarm_rate(rng, runs, "normal", 0.8, shift=shift)
        lines.append(f"| all 4 metrics of one variant {shift:g} SD worse, corr 0.8 | 5/5 | "
                     f"{ci(rate, runs)} |")
    for shift in (2.0, 3.0, 4.0):
        rate = alarm_rate(rng, runs, "normal", 0.8, shift=shift, shifted=["auc"])
        lines.append(f"| AUC alone {shift:g} SD worse, corr 0.8 | 5/5 | {ci(rate, runs)} |")
    for shift in (1.0, 2.0):
        rate = alarm_rate(rng, runs, "normal", 0.8, shift=shift, m=10, k=10)
        lines.append(f"| all 4 metrics {shift:g} SD worse, corr 0.8 | 10/10 | "
                     f"{ci(rate, runs)} |")
    return lines + [""]


def simulated_predictions(rng, y, difficulty, seeds, variant, separation, tau=0.15,
                          bias_sd=0.3, noise_sd=0.5, failed=0.0) -> pd.DataFrame:
    """One variant's predictions: logit = a_s * z_i + b_s + noise, z_i = separation *
    (2y - 1) + difficulty_i (shared by all seeds); a_s ~ N(1, tau), failed seeds a_s = 0.3."""
    frames = []
    for seed in seeds:
        a = 0.3 if rng.random() < failed else rng.normal(1.0, tau)
        logit = (a * (separation * (2 * y - 1) + difficulty) + rng.normal(0, bias_sd)
                 + rng.normal(0, noise_sd, len(y)))
        frames.append(pd.DataFrame({"variant": variant, "seed": seed,
                                    "file": [f"{i:04d}" for i in range(len(y))], "label": y,
                                    "prob_malignant": 1 / (1 + np.exp(-logit))}))
    return pd.concat(frames, ignore_index=True)


def _run_b(rng, drop: float, failed: float, tau: float) -> bool:
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    difficulty = rng.normal(0, 1, len(y))  # one test set, used by baseline and new run

    def run(seeds, drop_first):
        return pd.concat([simulated_predictions(rng, y, difficulty, seeds, v,
                                                0.85 - (drop_first if v == "v0" else 0.0),
                                                tau=tau, failed=failed) for v in ("v0", "v1")])

    baseline = gate.seed_baseline(run(range(5), 0.0))
    return not gate.check(baseline, run(range(100, 105), drop)).passed


def part_b(rng, runs: int, tau: float) -> list[str]:
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    probe = simulated_predictions(rng, y, rng.normal(0, 1, 200), range(400), "v", 0.85, tau)
    seed_sd = float(variance.per_seed_metrics(probe)["auc"].std())
    base_auc = population_auc(0.85, tau)
    lines = ["## B. Whole predictions, 200 test images, 5 baseline + 5 new seeds", "",
             (f"Model: population AUC {base_auc:.3f}; seed-to-seed SD of AUC {seed_sd:.3f} "
              f"(400 seeds scored on one 200-image test set)."), "",
             "| scenario | runs with any flag |", "| --- | --- |"]
    for label, drop, failed in (("no change", 0.0, 0.0), ("no change, 10% failed seeds", 0.0, .1),
                                ("separation 0.85 -> 0.80", 0.05, 0.0),
                                ("separation 0.85 -> 0.75", 0.10, 0.0),
                                ("separation 0.85 -> 0.65", 0.20, 0.0)):
        rate = float(np.mean([_run_b(rng, drop, failed, tau) for _ in range(runs)]))
        if drop:
            auc = population_auc(0.85 - drop, tau)
            label += (f" (AUC {base_auc:.3f} -> {auc:.3f}, "
                      f"{(base_auc - auc) / seed_sd:.1f} seed-SDs)")
        lines.append(f"| {label} | {ci(rate, runs)} |")
    return lines + [""]


def population_auc(separation, tau=0.15, noise_sd=0.5, draws=1_000_000, seed=0) -> float:
    """E over seeds of the population AUC: Phi(2 s a / sqrt(2 a^2 + 2 noise^2))."""
    a = np.random.default_rng(seed).normal(1.0, tau, draws)
    return float(np.mean(stats.norm.cdf(2 * separation * a / np.sqrt(2 * a ** 2
                                                                      + 2 * noise_sd ** 2))))


def part_c(rng, runs: int, n_resamples: int, tau: float) -> list[str]:
    truth = population_auc(0.85, tau)
    probe = simulated_predictions(rng, np.r_[np.ones(100, int), np.zeros(100, int)],
                                  rng.normal(0, 1, 200), range(400), "v", 0.85, tau)
    seed_sd = float(variance.per_seed_metrics(probe)["auc"].std())
    lines = ["## C. Coverage of the nominal 95% AUC interval (200 test images per run)", "",
             (f"Target: mean over seeds of the population AUC = {truth:.4f}; seed-to-seed SD "
              f"of AUC on one test set {seed_sd:.3f}."), "",
             "| interval | seeds | coverage | mean width |", "| --- | --- | --- | --- |"]
    for n_seeds in (1, 3, 5, 10):
        hits, widths = 0, []
        for _ in range(runs):
            y = np.r_[np.ones(100, int), np.zeros(100, int)]
            pred = simulated_predictions(rng, y, rng.normal(0, 1, 200), range(n_seeds), "v",
                                         0.85, tau)
            row = variance.summarise(pred, ["auc"], n_resamples, seed=int(rng.integers(1e9)))[0]
            hits += row["auc_ci_low"] <= truth <= row["auc_ci_high"]
            widths.append(row["auc_ci_high"] - row["auc_ci_low"])
        label = "image bootstrap of one seed (today's table)" if n_seeds == 1 else \
            "hierarchical bootstrap (seeds x images)"
        lines.append(f"| {label} | {n_seeds} | {ci(hits / runs, runs)} | "
                     f"{np.mean(widths):.3f} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--quick", action="store_true", help="about a tenth of the runs")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--parts", default="ABC", help="which parts to run (default ABC)")
    parser.add_argument("--tau", type=float, default=0.15,
                        help="seed-to-seed SD of the class-separation multiplier (B and C)")
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    lines = [(f"# Gate and interval simulations (seed {args.seed}, tau {args.tau:g}, rule: "
              f"{gate.RULE.format(alpha=gate.FAMILY_ALPHA)})"), ""]
    if "A" in args.parts:
        lines += part_a(rng, int(4000 * scale))
    if "B" in args.parts:
        lines += part_b(rng, int(400 * scale), args.tau)
    if "C" in args.parts:
        lines += part_c(rng, int(400 * scale), 500, args.tau)
    lines.append(f"({time.perf_counter() - started:.0f} s)")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
