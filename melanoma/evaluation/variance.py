"""Training variance: every metric's mean over seeds, its seed-to-seed spread, and intervals
and comparisons that cover both training noise and the sampling of test images.

    rows = summarise(predictions)                      # one row per variant
    diff = compare(predictions, "samplewise", "featurewise", metric="auc")

``predictions`` has one row per (variant, seed, test image): columns ``variant``, ``seed``,
``file``, ``label``, ``prob_malignant``. Every seed of a variant must score the same images.

The interval is a two-level bootstrap over a crossed design: each replicate draws S seeds
with replacement from the S trained seeds and ONE stratified resample of the test images,
and averages the metric over the drawn seeds, each scored on that resample. All seeds are
scored on the same test images, so an image that is hard for one model tends to be hard for
all: drawing images independently for each seed would average that shared error away and
give too narrow an interval (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2),
shows that resampling both factors of a crossed design independently is close to right and
errs on the conservative side). Resampling S values with replacement gives their mean only
(S-1)/S of the usual s^2/S variance, and a normal quantile ignores that s is estimated from
S-1 degrees of freedom; so a replicate's departure from the all-seed mean on the same images
is scaled by sqrt(S/(S-1)) * t(S-1, 1-alpha/2) / z(1-alpha/2) (2.7 with 3 seeds, 1.6 with 5,
1.2 with 10): the seed part then behaves like a Student-t interval. Simulated coverage of the
95% AUC interval with 3-10 seeds (docs/seed_variance.md): 0.94-0.995 with small seed spread,
0.915-0.935 with large skewed spread (0.85-0.91 without the t factor; 0.645 for today's
one-seed image bootstrap).
With one seed the interval is the test-image bootstrap alone (equal to
``metrics.bootstrap_ci`` with the same seed) and the row says training variance was not
measured. Metrics are at the 0.5 threshold; threshold-chosen metrics are not covered here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from melanoma.evaluation import metric_table, metrics
from melanoma.evaluation.rows import CONFUSION, RANKING
from melanoma.util.errors import UserError

METRICS = CONFUSION + RANKING  # the metrics of the results table (counts excluded)
LOWER_IS_BETTER = metric_table.LOWER_IS_BETTER
COLUMNS = ("variant", "seed", "file", "label", "prob_malignant")
NOT_MEASURED = "not measured: one seed"


@dataclass(frozen=True)
class SeedMatrix:
    """One variant's predictions as a (seeds x images) array, images in a fixed file order."""

    variant: str
    seeds: tuple[int, ...]
    files: tuple[str, ...]
    y: np.ndarray  # (n,) int64 labels
    p: np.ndarray  # (S, n) malignant probabilities


@dataclass(frozen=True)
class Comparison:
    """Paired hierarchical-bootstrap comparison of one metric between variants a and b."""

    a: str
    b: str
    metric: str
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b (in the metric's own direction)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided bootstrap proportion: 2 x the share of replicates beyond 0
    paired_seeds: bool
    n_seeds_a: int
    n_seeds_b: int
    within_training_noise: bool  # the interval covers 0
    note: str


def _check_columns(predictions: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in predictions.columns]
    if missing:
        raise UserError(f"predictions lack the column(s) {', '.join(missing)}; "
                        f"expected {', '.join(COLUMNS)} (one row per variant, seed and image)")


def seed_matrix(predictions: pd.DataFrame, variant: str) -> SeedMatrix:
    """The variant's predictions aligned by file; a UserError if seeds scored other images."""
    _check_columns(predictions)
    rows = predictions[predictions["variant"] == variant]
    if rows.empty:
        known = ", ".join(map(str, predictions["variant"].unique()))
        raise UserError(f"no predictions for variant {variant!r}; known: {known}")
    if rows.duplicated(["seed", "file"]).any():
        raise UserError(f"variant {variant!r} has more than one prediction for the same "
                        f"seed and file")
    seeds = sorted(rows["seed"].unique().tolist())
    first = rows[rows["seed"] == seeds[0]].sort_values("file", kind="stable")
    files = first["file"].to_numpy()
    try:
        y, _ = metrics.validate_predictions(first["label"].to_numpy(),
                                            first["prob_malignant"].to_numpy())
    except ValueError as error:
        raise UserError(f"variant {variant!r}, seed {seeds[0]}: {error}") from None
    probs = []
    for s in seeds:
        group = rows[rows["seed"] == s].sort_values("file", kind="stable")
        if not np.array_equal(group["file"].to_numpy(), files):
            raise UserError(f"variant {variant!r}: seed {s} scored other test images than "
                            f"seed {seeds[0]}; every seed must score the same test set")
        try:
            y_s, p_s = metrics.validate_predictions(group["label"].to_numpy(),
                                                    group["prob_malignant"].to_numpy())
        except ValueError as error:
            raise UserError(f"variant {variant!r}, seed {s}: {error}") from None
        if not np.array_equal(y_s, y):
            raise UserError(f"variant {variant!r}: seed {s} gives other labels for the same "
                            f"files than seed {seeds[0]}")
        probs.append(p_s)
    return SeedMatrix(variant, _int_seeds(variant, seeds), tuple(files), y, np.vstack(probs))


def _int_seeds(variant: str, seeds: list) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in seeds)
    except (TypeError, ValueError):
        out = ()
    if out != tuple(seeds):
        raise UserError(f"variant {variant!r}: seed values must be integers, got {seeds[:5]}")
    return out


def _variants(predictions: pd.DataFrame) -> list[str]:
    _check_columns(predictions)
    return list(dict.fromkeys(predictions["variant"].tolist()))


def per_seed_metrics(predictions: pd.DataFrame, names=METRICS) -> pd.DataFrame:
    """One row per (variant, seed): n_test and every metric (for results.json and the gate)."""
    rows = []
    for variant in _variants(predictions):
        m = seed_matrix(predictions, variant)
        for seed, p in zip(m.seeds, m.p):
            point = metrics.binary_metrics(m.y, p)
            rows.append({"variant": variant, "seed": seed, "n_test": len(m.y),
                         "n_pos": int(m.y.sum()), "n_neg": int(len(m.y) - m.y.sum()),
                         **{name: point[name] for name in names}})
    return pd.DataFrame(rows)


def _replicate_values(m: SeedMatrix, idx: np.ndarray, names) -> dict[str, np.ndarray]:
    """{metric: (S, B)}: each seed's metric on each image resample (rows of ``idx``)."""
    out = {name: np.empty((len(m.seeds), len(idx))) for name in names}
    step = max(1, metrics._CHUNK_ELEMENTS // len(m.y))
    for s, p in enumerate(m.p):
        for start in range(0, len(idx), step):
            chunk = metrics._resample_metrics(m.y, p, idx[start:start + step], list(names),
                                              metrics.DEFAULT_THRESHOLD)
            for name, values in chunk.items():
                out[name][s, start:start + step] = values
    return out


def seed_average(values: np.ndarray, draws: np.ndarray, alpha: float | None = 0.05) -> np.ndarray:
    """(B,) replicate means: ``values`` (S, B) averaged over the seeds drawn in each row of
    ``draws`` (B, S); departures from the all-seed mean scaled by sqrt(S/(S-1)) and, unless
    ``alpha`` is None, by t(S-1, 1-alpha/2) / z(1-alpha/2) (see the module docstring)."""
    n_seeds = values.shape[0]
    everyone = values.mean(axis=0)
    if n_seeds == 1:
        return everyone
    scale = math.sqrt(n_seeds / (n_seeds - 1))
    if alpha is not None:
        scale *= stats.t.ppf(1 - alpha / 2, n_seeds - 1) / stats.norm.ppf(1 - alpha / 2)
    drawn = np.take_along_axis(values.T, draws, axis=1).mean(axis=1)
    return everyone + scale * (drawn - everyone)


def _interval(replicates: np.ndarray, alpha: float, bounds=(-math.inf, math.inf)
              ) -> tuple[float, float]:
    """Percentile interval, kept inside ``bounds`` (the scaled seed departures can step a
    little outside a metric's range)."""
    if not np.all(np.isfinite(replicates)):
        return math.nan, math.nan
    low, high = np.clip(np.quantile(replicates, [alpha / 2, 1 - alpha / 2]), *bounds)
    return float(low), float(high)


def variant_summary(m: SeedMatrix, names=METRICS, n_resamples: int = 1000,
                    alpha: float = 0.05, seed: int = 0) -> dict:
    """One row: per metric the mean over seeds, the seed SD (None with one seed) and the
    hierarchical-bootstrap interval ``<metric>_ci_low/high``."""
    names = metrics.check_bootstrap_settings(names, n_resamples, alpha, METRICS, UserError)
    rng = np.random.default_rng(seed)
    # images first, so that with one seed the interval equals metrics.bootstrap_ci(seed=seed)
    idx = metrics._stratified_indices(m.y, int(n_resamples), rng)
    draws = rng.integers(0, len(m.seeds), size=(int(n_resamples), len(m.seeds)))
    values = _replicate_values(m, idx, names)
    point = [metrics.binary_metrics(m.y, p) for p in m.p]
    n_seeds = len(m.seeds)
    row = {"variant": m.variant, "n_seeds": n_seeds, "seeds": list(m.seeds),
           "n_test": len(m.y), "n_pos": int(m.y.sum()), "n_neg": int(len(m.y) - m.y.sum()),
           "training_variance": (f"measured over {n_seeds} seeds" if n_seeds > 1
                                 else NOT_MEASURED)}
    for name in names:
        per_seed = np.array([pt[name] for pt in point])
        row[name] = float(per_seed.mean())
        row[f"{name}_sd"] = float(per_seed.std(ddof=1)) if n_seeds > 1 else None
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = _interval(
            seed_average(values[name], draws, alpha), alpha, (0.0, 1.0))  # metrics lie in [0, 1]
    return row


def summarise(predictions: pd.DataFrame, names=METRICS, n_resamples: int = 1000,
              alpha: float = 0.05, seed: int = 0) -> list[dict]:
    """``variant_summary`` for every variant, in order of appearance."""
    return [variant_summary(seed_matrix(predictions, v), names, n_resamples, alpha, seed)
            for v in _variants(predictions)]


def _check_same_images(ma: SeedMatrix, mb: SeedMatrix) -> None:
    """A UserError unless both variants scored the same files with the same labels (both
    matrices hold their files sorted, so equal sets mean equal order)."""
    if ma.files != mb.files:
        raise UserError(f"variants {ma.variant!r} and {mb.variant!r} were scored on different "
                        f"test images; a paired comparison needs the same test set")
    if not np.array_equal(ma.y, mb.y):
        raise UserError(f"variants {ma.variant!r} and {mb.variant!r} give other labels for the "
                        f"same files")


def _seed_mean(m: SeedMatrix, metric: str) -> float:
    return float(np.mean([metrics.binary_metrics(m.y, p)[metric] for p in m.p]))


def compare(predictions: pd.DataFrame, a: str, b: str, metric: str = "auc",
            n_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> Comparison:
    """Difference a - b of the metric's mean over seeds, with a paired hierarchical bootstrap:
    the same image resample for both variants in every replicate, and the same seed draws
    when both variants were trained on the same seeds (else independent seed draws)."""
    metrics.check_bootstrap_settings([metric], n_resamples, alpha, METRICS, UserError)
    ma, mb = seed_matrix(predictions, a), seed_matrix(predictions, b)
    _check_same_images(ma, mb)
    paired = ma.seeds == mb.seeds
    rng = np.random.default_rng(seed)
    idx = metrics._stratified_indices(ma.y, int(n_resamples), rng)
    draws_a = rng.integers(0, len(ma.seeds), size=(int(n_resamples), len(ma.seeds)))
    draws_b = draws_a if paired else rng.integers(0, len(mb.seeds),
                                                  size=(int(n_resamples), len(mb.seeds)))
    diff = (seed_average(_replicate_values(ma, idx, [metric])[metric], draws_a, alpha)
            - seed_average(_replicate_values(mb, idx, [metric])[metric], draws_b, alpha))
    mean_a, mean_b = _seed_mean(ma, metric), _seed_mean(mb, metric)
    low, high = _interval(diff, alpha)
    p_value = math.nan
    if math.isfinite(low):
        p_value = min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0)))
    notes = []
    if len(ma.seeds) == 1 or len(mb.seeds) == 1:
        notes.append(f"training variance {NOT_MEASURED} for "
                     f"{' and '.join(m.variant for m in (ma, mb) if len(m.seeds) == 1)}")
    if not paired:
        notes.append("seeds differ between the variants: seeds drawn independently")
    return Comparison(a, b, metric, mean_a, mean_b, mean_a - mean_b, low, high,
                      float(p_value), paired, len(ma.seeds), len(mb.seeds),
                      bool(low <= 0.0 <= high), "; ".join(notes))


def compare_to_best(predictions: pd.DataFrame, metric: str = "auc", n_resamples: int = 2000,
                    alpha: float = 0.05, seed: int = 0) -> list[Comparison]:
    """Every other variant against the one with the best mean ``metric`` (for the table's
    "within training noise" column); empty with fewer than two variants."""
    metrics.check_bootstrap_settings([metric], n_resamples, alpha, METRICS, UserError)
    variants = _variants(predictions)
    means = {v: _seed_mean(seed_matrix(predictions, v), metric) for v in variants}
    finite = {v: x for v, x in means.items() if math.isfinite(x)}
    if len(finite) < 2:
        return []
    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(finite, key=finite.get)
    return [compare(predictions, v, best, metric, n_resamples, alpha, seed)
            for v in variants if v != best]
