"""Tests for melanoma.evaluation.gate: the one-sided tests against scipy's own t-tests, Holm
against a plain loop, the verdicts on whole predictions, and the false-alarm rate and power
of the rule on simulated seeds (fixed random streams; the bounds state their margins)."""
import math

import numpy as np
import pytest
from scipy import stats

from melanoma.evaluation import gate as G
from melanoma.util.errors import UserError


@pytest.mark.parametrize("trial", range(20))
def test_welch_p_value_matches_scipy(trial):
    rng = np.random.default_rng(trial)
    m, k = rng.integers(2, 9), rng.integers(2, 9)
    x, y = rng.normal(0.8, 0.03, m), rng.normal(0.8 + rng.normal(0, 0.03), rng.uniform(.01, .06), k)
    lower = bool(trial % 2)
    d, p = G.worse_p_value(x, y, lower)
    ref = stats.ttest_ind(x, y, equal_var=False, alternative="less" if lower else "greater")
    assert d == pytest.approx(y.mean() - x.mean() if lower else x.mean() - y.mean(), abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("trial", range(10))
def test_one_new_seed_is_the_pooled_t_test(trial):
    # with one current value the pooled two-sample t-test has s_p = s_x and m - 1 df: the
    # prediction-interval test of the module, computed by scipy another way
    rng = np.random.default_rng(100 + trial)
    x, y = rng.normal(0, 1, rng.integers(3, 10)), rng.normal(0.5, 1, 1)
    _, p = G.worse_p_value(x, y)
    assert p == pytest.approx(stats.ttest_ind(x, y, alternative="greater").pvalue, rel=1e-9)


def naive_holm(p, alpha):
    order = sorted(range(len(p)), key=lambda i: (p[i], i))
    rejected = [False] * len(p)
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        rejected[i] = True
    return rejected


@pytest.mark.parametrize("trial", range(30))
def test_holm_matches_a_plain_loop(trial):
    rng = np.random.default_rng(trial)
    p = rng.choice([rng.uniform(0, 0.02), 0.0125, 0.05, 0.5], size=rng.integers(1, 12)).tolist()
    p = [v if rng.random() < 0.5 else rng.uniform(0, 0.1) for v in p]
    assert G.holm(p, 0.05).tolist() == naive_holm(p, 0.05)


def test_zero_spread():
    assert G.worse_p_value([0.8] * 5, [0.8] * 5) == (0.0, 1.0)
    d, p = G.worse_p_value([0.8] * 5, [0.7] * 5)
    assert d == pytest.approx(0.1) and p == 0.0
    assert G.worse_p_value([0.1] * 5, [0.2] * 3, lower_is_better=True)[1] == 0.0
    # equal constant values whose means differ by rounding (0.1 * 3 / 3 != 0.1) are a tie
    assert G.worse_p_value([0.1] * 5, [0.1] * 3) == (0.0, 1.0)


def test_identical_rerun_passes_and_a_worse_run_is_flagged(seeded_predictions):
    seeds = tuple(range(1, 6))
    base_pred = seeded_predictions(seeds=seeds, n_pos=40, n_neg=40, spread=0.2)
    baseline = G.seed_baseline(base_pred)
    assert baseline["variants"]["a"]["seeds"] == list(seeds)
    same = G.check(baseline, base_pred)
    assert same.passed and {c.verdict for c in same.checks} == {"ok"}
    assert all(c.worse_by == 0.0 for c in same.checks)
    worse = seeded_predictions(seeds=seeds, n_pos=40, n_neg=40, spread=0.2, separation=0.2,
                             rng_seed=0)
    outcome = G.check(baseline, worse)
    flagged = {(c.variant, c.metric) for c in outcome.checks if c.verdict == "REGRESSED"}
    assert not outcome.passed and ("a", "auc") in flagged and ("b", "auc") in flagged
    assert "REGRESSED" in outcome.report() and "FAIL" in outcome.report()


def test_other_test_set_missing_variant_and_short_baselines(seeded_predictions):
    pred = seeded_predictions(seeds=tuple(range(5)))
    baseline = G.seed_baseline(pred)
    other = pred[pred["file"] != "img_000.jpg"]
    assert {c.verdict for c in G.check(baseline, other).checks} == {"CHANGED"}
    relabelled = pred.assign(label=np.where(pred["file"] == "img_000.jpg", 0, pred["label"]))
    assert {c.verdict for c in G.check(baseline, relabelled).checks} == {"CHANGED"}
    only_a = G.check(baseline, pred[pred["variant"] == "a"])
    assert {c.verdict for c in only_a.checks if c.variant == "b"} == {"MISSING"}
    with pytest.raises(UserError, match="at least 5"):
        G.seed_baseline(pred[pred["seed"] < 4])
    with pytest.raises(UserError, match="not a seed baseline"):
        G.check({"variants": {}}, pred)
    with pytest.raises(UserError, match="unknown gated metric"):
        G.check(baseline, pred, metrics=["auroc"])


def test_one_seed_runs_are_judged_against_the_baseline_spread(seeded_predictions):
    base = seeded_predictions(seeds=tuple(range(6)), n_pos=40, n_neg=40)
    baseline = G.seed_baseline(base)
    one = G.check(baseline, base[base["seed"] == 0])
    assert one.passed and all(c.n_current == 1 for c in one.checks)


def simulate_family(rng, runs, shift_sd=0.0, rho=0.8, n_variants=2, m=5, k=5):
    """Share of runs with any REGRESSED line: per-seed metric values normal with unit SD,
    metrics of a variant correlated ``rho``; ``shift_sd`` moves every metric of the first
    variant the worse way (Brier up, the others down)."""
    n_metrics = len(G.GATED)
    cov = np.full((n_metrics, n_metrics), rho) + (1 - rho) * np.eye(n_metrics)
    sign = np.array([-1.0 if name in G.LOWER_IS_BETTER else 1.0 for name in G.GATED])
    xs = rng.multivariate_normal(np.zeros(n_metrics), cov, (runs, n_variants, m))
    ys = rng.multivariate_normal(np.zeros(n_metrics), cov, (runs, n_variants, k))
    ys[:, 0] -= shift_sd * sign
    alarms = 0
    for run in range(runs):
        base, now = {}, {}
        for v in range(n_variants):
            x, y = xs[run, v], ys[run, v]
            base[f"v{v}"] = {"per_seed": {n: x[:, j].tolist() for j, n in enumerate(G.GATED)}}
            now[f"v{v}"] = {"per_seed": {n: y[:, j].tolist() for j, n in enumerate(G.GATED)}}
        alarms += any(c.failed for c in G.check_values(base, now))
    return alarms / runs


def test_false_alarm_rate_is_at_most_the_stated_rate():
    # 2000 runs: the binomial SE at 5% is 0.5 points, so 0.065 is 3 SE above the bound;
    # the floor shows the test is not vacuous (independent metrics give nearly 5%)
    rate = simulate_family(np.random.default_rng(0), 2000, rho=0.0)
    assert 0.02 <= rate <= 0.065, rate
    correlated = simulate_family(np.random.default_rng(1), 2000, rho=0.8)
    assert correlated <= 0.065, correlated


def test_power_against_a_three_sd_shift():
    # 5 vs 5 seeds, 8 checks: a 3-SD drop in one variant's metrics is found most of the time
    # (about 0.9 simulated, docs/seed_variance.md); 0.75 leaves 6 SE of room at 300 runs
    power = simulate_family(np.random.default_rng(2), 300, shift_sd=3.0, rho=0.8)
    assert power >= 0.75, power
    assert simulate_family(np.random.default_rng(3), 300, shift_sd=0.5) < 0.3


def test_report_states_the_rule(seeded_predictions):
    pred = seeded_predictions(seeds=tuple(range(5)))
    text = G.check(G.seed_baseline(pred), pred).report()
    assert "Holm" in text and "PASS: 8 checks" in text and "8 tests in the family" in text
    assert not math.isnan(G.seed_baseline(pred)["family_alpha"])


def test_a_degenerate_seed_fails_with_its_own_word(seeded_predictions):
    pred = seeded_predictions(seeds=tuple(range(5)), n_pos=40, n_neg=40)
    baseline = G.seed_baseline(pred)
    one = (pred["variant"] == "a") & (pred["seed"] == 3)
    collapsed = pred.copy()
    collapsed.loc[one, "prob_malignant"] = 0.5926466 + np.random.default_rng(0).normal(
        0, 1e-7, int(one.sum()))
    outcome = G.check(baseline, collapsed)
    bad = [c for c in outcome.checks if c.verdict == "DEGENERATE"]
    assert not outcome.passed and [c.variant for c in bad] == ["a"]
    assert "DEGENERATE a: seed 3: probabilities barely vary" in outcome.report()
    assert G.check(baseline, pred).passed  # the same predictions before the collapse
