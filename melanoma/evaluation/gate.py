"""Regression gate calibrated on training seeds: flag a metric only when a run's seeds are
worse than the baseline's seed-to-seed spread allows, at a stated false-alarm rate.

    baseline = seed_baseline(predictions)          # >= 5 seeds per variant, stored as JSON
    outcome = check(baseline, new_predictions)     # outcome.passed, outcome.report()

Decision rule. For every gated (variant, metric) the baseline holds the per-seed values
x_1..x_m (m >= 5 seeds) and the run gives y_1..y_k (k >= 1), scored on the same test set.
Let d = mean(x) - mean(y) for higher-is-better metrics and mean(y) - mean(x) for Brier and
ECE (d > 0: the run is worse). With k >= 2, Welch's one-sided t-test: t = d / sqrt(s_x^2/m
+ s_y^2/k), Welch-Satterthwaite degrees of freedom. With k = 1, the run is one new draw:
t = d / (s_x sqrt(1 + 1/m)) with m - 1 degrees of freedom. One-sided p = P(T >= t).
Over the family of all F checked (variant, metric) pairs, Holm's step-down rule at
``family_alpha`` (default 0.05): sort the p-values, compare the i-th smallest with
family_alpha / (F - i + 1), and flag REGRESSED every pair before the first that passes.
If both spreads are zero (below 1e-12), only a tie (within 1e-12) passes. A variant with a
degenerate seed (probabilities that barely vary: :mod:`melanoma.evaluation.degenerate`)
fails with the verdict DEGENERATE, whatever its metrics.

What it guarantees. When the run's seeds are new draws from the same distribution as the
baseline's (same code, data and settings; another machine, thread count or seed list),
each test's false-alarm rate is at most its level for normally distributed per-seed values
(Welch's test is approximate, and close for such samples), and Holm keeps the chance of any
false alarm in the whole family at most ``family_alpha`` whatever the correlation between
metrics. Rerunning the baseline's seeds on the same machine gives identical values: d = 0,
never flagged. docs/seed_variance.md gives the real rates, simulated (correlated metrics,
heavy tails, whole predictions) and the power against shifts of known size.

Why there is no separate test-set term: the baseline and the run are scored on the same test
images (checked: counts and a hash of files and labels must match, else CHANGED). Sampling
of the test set then moves both alike and cancels in d, except through how each trained
model happens to fit these particular images, and that part varies from seed to seed, so it
is inside s_x and s_y. A different test set is not comparable and the gate refuses it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from tabulate import tabulate

from melanoma.evaluation import variance
from melanoma.evaluation.degenerate import degenerate_reason
from melanoma.util.errors import UserError

FORMAT = "melanoma-bench seed baseline 1"
GATED = ("auc", "balanced_accuracy", "average_precision", "brier")
FAMILY_ALPHA = 0.05
MIN_BASELINE_SEEDS = 5
TIE = 1e-12  # metrics lie in [0, 1]: smaller differences and spreads are rounding, not signal
LOWER_IS_BETTER = variance.LOWER_IS_BETTER
RULE = ("one-sided Welch t-test of the seed means (prediction-interval t-test with one new "
        "seed), Holm step-down over all checked (variant, metric) pairs, family-wise "
        "false-alarm rate <= {alpha:g}")


def test_set_fingerprint(predictions: pd.DataFrame, variant: str) -> str:
    """Short hash of the variant's test files and labels (sorted): equal keys, same test set."""
    rows = predictions[predictions["variant"] == variant][["file", "label"]].drop_duplicates()
    text = "\n".join(f"{f}\t{int(y)}" for f, y in sorted(rows.itertuples(index=False)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_values(predictions: pd.DataFrame, min_seeds: int = 1) -> dict[str, dict]:
    """{variant: {"seeds", "n", "n_pos", "n_neg", "test_set", "per_seed": {metric: [..]}}}
    with every metric of the results table (undefined values as None)."""
    table = variance.per_seed_metrics(predictions)
    out = {}
    for name, group in table.groupby("variant", sort=False):
        if len(group) < min_seeds:
            raise UserError(f"variant {name!r} has {len(group)} seed(s); a seed baseline needs "
                            f"at least {min_seeds} (set seeds = [..] in the config)")
        first = group.iloc[0]
        out[name] = {"seeds": [int(s) for s in group["seed"]], "n": int(first["n_test"]),
                     "n_pos": int(first["n_pos"]), "n_neg": int(first["n_neg"]),
                     "test_set": test_set_fingerprint(predictions, name),
                     "per_seed": {m: [None if not math.isfinite(v) else float(v)
                                      for v in group[m]] for m in variance.METRICS}}
    return out


def seed_baseline(predictions: pd.DataFrame, family_alpha: float = FAMILY_ALPHA) -> dict:
    """The gate's part of a baseline file (the caller adds config, git and versions)."""
    return {"format": FORMAT, "rule": RULE.format(alpha=family_alpha),
            "family_alpha": family_alpha, "gated_metrics": list(GATED),
            "variants": seed_values(predictions, MIN_BASELINE_SEEDS)}


def worse_p_value(base, current, lower_is_better: bool = False) -> tuple[float, float]:
    """(d, one-sided p) for "current is worse than base" (see the module docstring)."""
    x, y = np.asarray(base, float), np.asarray(current, float)
    m, k = len(x), len(y)
    if m < 2 or k < 1:
        raise ValueError(f"need at least 2 baseline values and 1 current value, got {m}, {k}")
    d = float(y.mean() - x.mean()) if lower_is_better else float(x.mean() - y.mean())
    d = 0.0 if abs(d) <= TIE else d
    vx = x.var(ddof=1) / m
    if k == 1:
        se2, df = x.var(ddof=1) * (1 + 1 / m), m - 1
    else:
        vy = y.var(ddof=1) / k
        se2 = vx + vy
        df = se2 ** 2 / (vx ** 2 / (m - 1) + vy ** 2 / (k - 1)) if se2 > 0 else 1.0
    if se2 <= TIE ** 2:
        return d, 0.0 if d > 0 else 1.0
    return d, float(stats.t.sf(d / math.sqrt(se2), df))


def holm(p_values, alpha: float) -> np.ndarray:
    """Holm's step-down rejections (bool array in the input order)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    thresholds = alpha / (len(p) - np.arange(len(p)))
    passed = np.cumprod(p[order] <= thresholds).astype(bool)
    rejected = np.zeros(len(p), bool)
    rejected[order] = passed
    return rejected


@dataclass(frozen=True)
class GateCheck:
    """One line of the gate's table."""

    variant: str
    metric: str
    base_mean: float | None
    base_sd: float | None
    n_base: int
    current_mean: float | None
    current_sd: float | None
    n_current: int
    worse_by: float | None  # d: > 0 means the run is worse
    p_value: float | None
    verdict: str  # "ok", "REGRESSED", "MISSING", "CHANGED", "DEGENERATE", "undefined"
    reason: str = ""  # why DEGENERATE

    @property
    def failed(self) -> bool:
        return self.verdict in ("REGRESSED", "MISSING", "CHANGED", "DEGENERATE")


def _stats(values) -> tuple[float | None, float | None, int]:
    if not values or any(v is None for v in values):
        return None, None, len(values or [])
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), sd, len(values)


def _line(variant: str, metric: str, base: dict, now: dict | None) -> GateCheck:
    """The check before the family-wise decision (verdict "ok" pending Holm)."""
    b_mean, b_sd, m = _stats(base["per_seed"].get(metric))
    if now is None:
        return GateCheck(variant, metric, b_mean, b_sd, m, None, None, 0, None, None, "MISSING")
    c_mean, c_sd, k = _stats(now["per_seed"].get(metric))
    if any(base.get(f) != now.get(f) for f in ("n", "n_pos", "n_neg", "test_set")):
        return GateCheck(variant, metric, b_mean, b_sd, m, c_mean, c_sd, k, None, None,
                         "CHANGED")
    if b_mean is None or m < 2:
        return GateCheck(variant, metric, b_mean, b_sd, m, c_mean, c_sd, k, None, None,
                         "undefined")
    if c_mean is None:
        return GateCheck(variant, metric, b_mean, b_sd, m, c_mean, c_sd, k, None, None,
                         "MISSING")
    d, p = worse_p_value(base["per_seed"][metric], now["per_seed"][metric],
                         metric in LOWER_IS_BETTER)
    return GateCheck(variant, metric, b_mean, b_sd, m, c_mean, c_sd, k, d, p, "ok")


def check_values(base_variants: dict, current_variants: dict, metrics=GATED,
                 family_alpha: float = FAMILY_ALPHA) -> list[GateCheck]:
    """All checks, Holm applied over those that have a p-value."""
    unknown = [m for m in metrics if m not in variance.METRICS]
    if unknown:
        raise UserError(f"unknown gated metric(s) {unknown}; choose from "
                        f"{', '.join(variance.METRICS)}")
    if not 0 < family_alpha < 1:
        raise UserError(f"family_alpha must lie strictly between 0 and 1, got {family_alpha!r}")
    lines = [_line(v, metric, base, current_variants.get(v))
             for v, base in base_variants.items() for metric in metrics]
    tested = [i for i, c in enumerate(lines) if c.p_value is not None]
    flags = holm([lines[i].p_value for i in tested], family_alpha) if tested else []
    for i, flagged in zip(tested, flags):
        if flagged:
            lines[i] = GateCheck(**{**lines[i].__dict__, "verdict": "REGRESSED"})
    return lines


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided, and the table that says why."""

    checks: list[GateCheck]
    family_alpha: float

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks)

    def report(self) -> str:
        def num(x, fmt=".4f"):
            return "-" if x is None else format(x, fmt)

        rows = [[c.variant, c.metric, f"{num(c.base_mean)} ± {num(c.base_sd)} ({c.n_base})",
                 f"{num(c.current_mean)} ± {num(c.current_sd)} ({c.n_current})",
                 num(c.worse_by, "+.4f"), num(c.p_value, ".2g"), c.verdict] for c in self.checks]
        text = tabulate(rows, headers=["variant", "metric", "baseline mean ± sd (seeds)",
                                       "run mean ± sd (seeds)", "worse by", "p (one-sided)",
                                       "verdict"], tablefmt="github", disable_numparse=True)
        n_tested = sum(c.p_value is not None for c in self.checks)
        failed = [c for c in self.checks if c.failed]
        text += "".join(f"\nDEGENERATE {c.variant}: {c.reason}" for c in self.checks
                        if c.verdict == "DEGENERATE")
        verdict = (f"FAIL: {len(failed)} of {len(self.checks)} checks failed" if failed
                   else f"PASS: {len(self.checks)} checks")
        return (f"{text}\n\n{verdict}\nrule: {RULE.format(alpha=self.family_alpha)} "
                f"({n_tested} tests in the family)")


def _fail(source: str, field: str, problem: str) -> UserError:
    return UserError(f"{source}: field {field}: {problem}; make the baseline again with "
                     f"--update-baseline")


def _check_variant(source: str, name: str, entry, gated) -> None:
    where = f"variants.{name}"
    if not isinstance(entry, dict):
        raise _fail(source, where, f"expected an object, got {type(entry).__name__}")
    seeds = entry.get("seeds")
    if (not isinstance(seeds, list) or len(seeds) < MIN_BASELINE_SEEDS
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise _fail(source, f"{where}.seeds", f"expected a list of at least "
                    f"{MIN_BASELINE_SEEDS} integer seeds, got {seeds!r:.60}")
    for field_name in ("n", "n_pos", "n_neg"):
        value = entry.get(field_name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(source, f"{where}.{field_name}", f"expected a count, got {value!r:.60}")
    if not isinstance(entry.get("test_set"), str):
        raise _fail(source, f"{where}.test_set", "expected the test set's fingerprint")
    per_seed = entry.get("per_seed")
    if not isinstance(per_seed, dict):
        raise _fail(source, f"{where}.per_seed", "expected an object of metric lists")
    for metric, values in per_seed.items():
        if metric not in variance.METRICS and metric not in gated:
            continue  # a metric of a later version: never judged here
        if not isinstance(values, list) or len(values) != len(seeds):
            raise _fail(source, f"{where}.per_seed.{metric}",
                        f"expected {len(seeds)} values (one per seed), got {values!r:.60}")
        for i, v in enumerate(values):
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                               and math.isfinite(v) and 0 <= v <= 1)
            if not ok:
                raise _fail(source, f"{where}.per_seed.{metric}[{i}]",
                            f"{v!r:.40} is not a metric value in [0, 1]")
    missing = [m for m in gated if m not in per_seed]
    if missing:
        raise _fail(source, f"{where}.per_seed", f"no values of the gated metric(s) "
                    f"{', '.join(missing)}")


def validate_baseline(baseline, source: str = "baseline") -> dict:
    """``baseline`` if it is a well-formed seed baseline, else a one-line UserError naming
    ``source`` (its file) and the field: NaN, infinite or out-of-range values, no variants,
    no gated metrics, a wrong type anywhere the gate reads."""
    if not isinstance(baseline, dict):
        raise UserError(f"{source}: not a seed baseline (expected a JSON object, got "
                        f"{type(baseline).__name__})")
    if baseline.get("format") != FORMAT:
        raise UserError(f"{source}: not a seed baseline (format {baseline.get('format')!r}); "
                        f"make one with at least {MIN_BASELINE_SEEDS} seeds")
    alpha = baseline.get("family_alpha", FAMILY_ALPHA)
    if (not isinstance(alpha, (int, float)) or isinstance(alpha, bool)
            or not 0 < alpha < 1):
        raise _fail(source, "family_alpha", f"expected a number strictly between 0 and 1, "
                    f"got {alpha!r:.40}")
    gated = baseline.get("gated_metrics", list(GATED))
    if not isinstance(gated, list) or not gated or not all(isinstance(m, str) for m in gated):
        raise _fail(source, "gated_metrics", f"expected a non-empty list of metric names, got "
                    f"{gated!r:.60}")
    unknown = [m for m in gated if m not in variance.METRICS]
    if unknown:
        raise _fail(source, "gated_metrics", f"unknown metric(s) {', '.join(unknown)}; known: "
                    f"{', '.join(variance.METRICS)}")
    variants = baseline.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise _fail(source, "variants", f"expected an object with at least one variant, got "
                    f"{variants!r:.60}")
    for name, entry in variants.items():
        _check_variant(source, name, entry, gated)
    return baseline


def check(baseline: dict, predictions: pd.DataFrame, metrics=None,
          family_alpha: float | None = None) -> GateOutcome:
    """Judge a run's predictions (a ``seed`` column, any number of seeds) against a baseline
    made by ``seed_baseline``; ``metrics``/``family_alpha`` default to the baseline's."""
    validate_baseline(baseline)
    alpha = baseline.get("family_alpha", FAMILY_ALPHA) if family_alpha is None else family_alpha
    chosen = tuple(baseline.get("gated_metrics", GATED) if metrics is None else metrics)
    checks = check_values(baseline["variants"], seed_values(predictions), chosen, alpha)
    return GateOutcome(checks + degenerate_checks(predictions), alpha)


def degenerate_checks(predictions: pd.DataFrame) -> list[GateCheck]:
    """One failed line per variant with a degenerate seed (its probabilities barely vary,
    :mod:`melanoma.evaluation.degenerate`): its metrics measure rounding, so whether they
    pass the t-tests says nothing; the gate fails with its own word."""
    lines = []
    for name, group in predictions.groupby("variant", sort=False):
        why = "; ".join(f"seed {seed}: {reason}" for seed, g in group.groupby("seed", sort=False)
                        if (reason := degenerate_reason(g["prob_malignant"].to_numpy())))
        if why:
            n = int(group["seed"].nunique())
            lines.append(GateCheck(name, "predictions", None, None, 0, None, None, n, None,
                                   None, "DEGENERATE", why))
    return lines
