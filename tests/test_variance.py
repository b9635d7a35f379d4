"""Tests for melanoma.evaluation.variance against a plain-loop reimplementation written here.

The reference draws the same random numbers (its own code, the same numpy calls in the same
order) and scores every replicate with ``metrics.binary_metrics`` (scikit-learn) one at a
time, where the module scores all replicates at once with the vectorised bootstrap code.
Tolerance 1e-9: the two paths sum the same numbers in a different order.
"""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from melanoma.evaluation import metrics
from melanoma.evaluation import variance as V
from melanoma.util.errors import UserError

TOL = 1e-9


def naive_draws(y, n_resamples, n_seeds, rng):
    """Stratified image resamples (positives' block, then negatives'), then seed draws."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.hstack([pos[rng.integers(0, len(pos), size=(n_resamples, len(pos)))],
                     neg[rng.integers(0, len(neg), size=(n_resamples, len(neg)))]])
    return idx, rng.integers(0, n_seeds, size=(n_resamples, n_seeds))


def naive_replicates(y, probs, idx, draws, names):
    """{name: replicates}, one replicate at a time: every seed scored on the replicate's
    images, averaged over the drawn seeds; the departure from the all-seed mean scaled by
    sqrt(S/(S-1)) * t(S-1, 0.975) / z(0.975)."""
    n_seeds = len(probs)
    if n_seeds > 1:
        scale = math.sqrt(n_seeds / (n_seeds - 1)) * stats.t.ppf(0.975, n_seeds - 1) / 1.959963984540054
    out = {name: [] for name in names}
    for rows, drawn in zip(idx, draws):
        scored = [metrics.binary_metrics(y[rows], p[rows]) for p in probs]
        for name in names:
            per_seed = [m[name] for m in scored]
            everyone = sum(per_seed) / n_seeds
            if n_seeds > 1:
                mean_drawn = sum(per_seed[d] for d in drawn) / n_seeds
                everyone += scale * (mean_drawn - everyone)
            out[name].append(everyone)
    return {name: np.array(v) for name, v in out.items()}


def by_seed(pred, variant):
    """(seeds, y, (S, n) probabilities) with files sorted, built with plain pandas."""
    rows = pred[pred["variant"] == variant].sort_values(["seed", "file"])
    seeds = sorted(rows["seed"].unique())
    y = rows[rows["seed"] == seeds[0]]["label"].to_numpy()
    return seeds, y, np.vstack([rows[rows["seed"] == s]["prob_malignant"].to_numpy()
                                for s in seeds])


@pytest.mark.parametrize("n_seeds", [1, 2, 4])
def test_summary_matches_naive_loop(seeded_predictions, n_seeds):
    pred = seeded_predictions(variants=("a",), seeds=tuple(range(10, 10 + n_seeds)))
    row = V.summarise(pred, n_resamples=40, seed=7)[0]
    seeds, y, probs = by_seed(pred, "a")
    idx, draws = naive_draws(y, 40, len(seeds), np.random.default_rng(7))
    replicates = naive_replicates(y, probs, idx, draws, V.METRICS)
    for name in V.METRICS:
        values = [metrics.binary_metrics(y, p)[name] for p in probs]
        assert row[name] == pytest.approx(np.mean(values), abs=TOL)
        if n_seeds == 1:
            assert row[f"{name}_sd"] is None
        else:
            assert row[f"{name}_sd"] == pytest.approx(np.std(values, ddof=1), abs=TOL)
        low, high = np.clip(np.quantile(replicates[name], [0.025, 0.975]), 0, 1)  # metric range
        assert (row[f"{name}_ci_low"], row[f"{name}_ci_high"]) == pytest.approx((low, high),
                                                                                  abs=TOL), name


@pytest.mark.parametrize("seeds_b", [(1, 2, 3), (4, 5)])
def test_compare_matches_naive_loop(seeded_predictions, seeds_b):
    pred = pd.concat([seeded_predictions(variants=("a",), seeds=(1, 2, 3), rng_seed=1),
                      seeded_predictions(variants=("b",), seeds=seeds_b, rng_seed=2)])
    got = V.compare(pred, "a", "b", "auc", n_resamples=30, seed=3)
    sa, y, pa = by_seed(pred, "a")
    sb, _, pb = by_seed(pred, "b")
    rng = np.random.default_rng(3)
    idx, draws_a = naive_draws(y, 30, len(sa), rng)
    paired = list(sa) == list(sb)
    draws_b = draws_a if paired else rng.integers(0, len(sb), size=(30, len(sb)))
    diff = (naive_replicates(y, pa, idx, draws_a, ["auc"])["auc"]
            - naive_replicates(y, pb, idx, draws_b, ["auc"])["auc"])
    auc_a = np.mean([metrics.binary_metrics(y, p)["auc"] for p in pa])
    auc_b = np.mean([metrics.binary_metrics(y, p)["auc"] for p in pb])
    assert got.paired_seeds is paired
    assert got.difference == pytest.approx(auc_a - auc_b, abs=TOL)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.quantile(diff, [0.025, 0.975])),
                                                      abs=TOL)
    expected_p = min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0)))
    assert got.p_value == pytest.approx(expected_p, abs=1e-12)
    assert got.within_training_noise == (got.ci_low <= 0 <= got.ci_high)
    assert ("independently" in got.note) is not paired


def test_one_seed_is_the_image_bootstrap_and_says_variance_was_not_measured(seeded_predictions):
    pred = seeded_predictions(variants=("a",), seeds=(5,))
    row = V.summarise(pred, n_resamples=200, seed=11)[0]
    _, y, probs = by_seed(pred, "a")
    ci = metrics.bootstrap_ci(y, probs[0], list(V.METRICS), 200, seed=11)
    assert row["n_seeds"] == 1 and row["training_variance"] == V.NOT_MEASURED
    for name in V.METRICS:
        assert row[f"{name}_sd"] is None
        # same draws and the same vectorised code: equal up to the mean of one number
        assert (row[f"{name}_ci_low"], row[f"{name}_ci_high"]) == pytest.approx(ci[name],
                                                                                  abs=1e-12)


def test_identical_seeds_give_the_image_only_interval(seeded_predictions):
    one = seeded_predictions(variants=("a",), seeds=(0,))
    copies = pd.concat([one.assign(seed=s) for s in (0, 1, 2, 3)])
    wide = V.summarise(copies, ["auc", "brier"], n_resamples=300, seed=2)[0]
    single = V.summarise(one, ["auc", "brier"], n_resamples=300, seed=2)[0]
    assert wide["auc_sd"] == 0.0 and wide["training_variance"] == "measured over 4 seeds"
    for key in ("auc_ci_low", "auc_ci_high", "brier_ci_low", "brier_ci_high"):
        assert wide[key] == pytest.approx(single[key], abs=1e-12)


def test_interval_widens_with_seed_spread(seeded_predictions):
    widths = []
    for spread in (0.0, 0.3, 0.6, 1.2):  # same random numbers, only the seed SD grows
        pred = seeded_predictions(variants=("a",), seeds=tuple(range(6)), spread=spread,
                                n_pos=40, n_neg=40, rng_seed=5)
        row = V.summarise(pred, ["auc", "accuracy"], n_resamples=400, seed=0)[0]
        widths.append(row["auc_ci_high"] - row["auc_ci_low"])
    assert all(a < b for a, b in itertools.pairwise(widths)), widths
    assert widths[-1] > 1.5 * widths[0], widths


def test_shapes_order_and_per_seed_rows(seeded_predictions):
    pred = seeded_predictions(variants=("zeta", "alpha"), seeds=(3, 1, 2))
    rows = V.summarise(pred, n_resamples=20)
    assert [r["variant"] for r in rows] == list(dict.fromkeys(pred["variant"]))
    for r in rows:
        assert r["seeds"] == [1, 2, 3] and r["n_test"] == 30 and r["n_pos"] == 12
        for name in V.METRICS:
            assert {name, f"{name}_sd", f"{name}_ci_low", f"{name}_ci_high"} <= set(r)
            assert r[f"{name}_ci_low"] <= r[f"{name}_ci_high"]
    table = V.per_seed_metrics(pred)
    assert len(table) == 6 and set(V.METRICS) <= set(table.columns)
    assert sorted(table[table["variant"] == "alpha"]["seed"]) == [1, 2, 3]


def test_compare_identical_variants_is_within_noise_and_clear_gaps_are_not(seeded_predictions):
    base = seeded_predictions(variants=("a",), seeds=(1, 2, 3))
    same = pd.concat([base, base.assign(variant="b")])
    c = V.compare(same, "a", "b", n_resamples=200)
    assert (c.difference, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert c.within_training_noise
    far = seeded_predictions(variants=("good", "bad"), variant_gap=1.5, spread=0.1, n_pos=50,
                           n_neg=50)
    c = V.compare(far, "good", "bad", n_resamples=300)
    assert c.difference > 0 and c.ci_low > 0 and not c.within_training_noise
    assert c.p_value < 0.01


def test_compare_to_best_uses_the_metric_direction(seeded_predictions):
    pred = seeded_predictions(variants=("best", "mid", "worst"), variant_gap=0.8, spread=0.1)
    by_auc = V.compare_to_best(pred, "auc", n_resamples=50)
    assert sorted((c.a, c.b) for c in by_auc) == [("mid", "best"), ("worst", "best")]
    by_brier = V.compare_to_best(pred, "brier", n_resamples=50)
    assert all(c.b == "best" and c.difference > 0 for c in by_brier)  # higher Brier is worse
    assert V.compare_to_best(pred[pred["variant"] == "best"], "auc") == []


def test_seed_average_by_hand():
    values = np.array([[1.0, 10.0], [3.0, 20.0]])  # 2 seeds x 2 replicates
    draws = np.array([[0, 0], [0, 1]])
    # replicate 0: everyone 2, drawn 1 -> 2 + sqrt(2) * (1 - 2); replicate 1: drawn == everyone
    plain = V.seed_average(values, draws, alpha=None)
    assert plain == pytest.approx([2 - math.sqrt(2), 15.0], abs=1e-12)
    # with the Student-t factor for 1 degree of freedom: t(1, 0.975) = 12.706
    assert V.seed_average(values, draws) == pytest.approx(
        [2 - math.sqrt(2) * 12.706204736 / 1.959963985, 15.0], abs=1e-8)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns="seed"), "lack the column"),
    (lambda d: d[~((d["seed"] == 2) & (d["file"] == "img_000.jpg"))], "other test images"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "more than one prediction"),
    (lambda d: d.assign(seed=d["seed"].astype(str)), "must be integers"),
    (lambda d: d.assign(prob_malignant=d["prob_malignant"] + 2), "lie in [0, 1]"),
])
def test_bad_predictions_are_user_errors(seeded_predictions, mutate, message):
    pred = seeded_predictions(variants=("a",), seeds=(1, 2))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        V.summarise(mutate(pred), n_resamples=5)


def test_bad_settings_and_unpaired_test_sets_are_user_errors(seeded_predictions):
    pred = seeded_predictions()
    with pytest.raises(UserError, match="Unknown metric"):
        V.summarise(pred, ["auroc"])
    with pytest.raises(UserError, match="n_resamples"):
        V.compare(pred, "a", "b", n_resamples=0)
    with pytest.raises(UserError, match="no predictions for variant 'c'"):
        V.compare(pred, "a", "c")
    other = pred[~((pred["variant"] == "b") & (pred["file"] == "img_001.jpg"))]
    with pytest.raises(UserError, match="different test images"):
        V.compare(other, "a", "b")
