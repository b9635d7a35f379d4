"""Tests for melanoma.evaluation.metrics against independent brute-force implementations
written here with plain Python loops."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from melanoma.evaluation import metrics as S

pytestmark = pytest.mark.filterwarnings("error")  # no sklearn/numpy warning may leak
FAST = settings(max_examples=60, deadline=None)
GRID = [i / 10 for i in range(11)]


@st.composite
def labelled(draw, min_pos=1, min_neg=1, max_n=40):
    """Random (y, p) with at least min_pos positives and min_neg negatives; p often tied or on bin edges."""
    n_pos = draw(st.integers(min_pos, max_n // 2))
    n_neg = draw(st.integers(min_neg, max_n // 2))
    y = [1] * n_pos + [0] * n_neg
    order = draw(st.permutations(range(len(y))))
    y = [y[i] for i in order]
    value = st.one_of(st.sampled_from(GRID), st.floats(0, 1, allow_nan=False))
    p = draw(st.lists(value, min_size=len(y), max_size=len(y)))
    return np.array(y), np.array(p)


# ---------- independent reference implementations ----------

def brute_auc(y, p):
    pos = [s for s, t in zip(p, y) if t == 1]
    neg = [s for s, t in zip(p, y) if t == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def brute_confusion(y, p, t):
    tp = fp = tn = fn = 0
    for s, label in zip(p, y):
        if s >= t:
            tp, fp = tp + (label == 1), fp + (label == 0)
        else:
            fn, tn = fn + (label == 1), tn + (label == 0)
    return tp, fp, tn, fn


def brute_roc_points(y, p):
    n_pos, n_neg = sum(y), len(y) - sum(y)
    points = []
    for t in sorted(set(p)) + [math.inf]:
        tp, fp, _, _ = brute_confusion(y, p, t)
        points.append((fp / n_neg, tp / n_pos))
    return sorted(points, key=lambda pt: (pt[1], pt[0]))


def brute_pauc(y, p, min_tpr=0.8):
    """Integrate (1 - FPR) d(TPR) over TPR in [min_tpr, 1] along the piecewise-linear ROC curve."""
    pts, area = brute_roc_points(y, p), 0.0
    for (f0, t0), (f1, t1) in zip(pts, pts[1:]):
        lo = max(t0, min_tpr)
        if t1 <= lo:
            continue
        f_lo = f0 + (f1 - f0) * (lo - t0) / (t1 - t0)
        area += (t1 - lo) * (1 - (f_lo + f1) / 2)
    return area


def brute_sens_at_spec(y, p, target):
    frac, n_pos, n_neg, best = Fraction(str(target)), sum(y), len(y) - sum(y), 0.0
    for t in set(p) | {math.inf}:
        tp, _, tn, _ = brute_confusion(y, p, t)
        if tn * frac.denominator >= frac.numerator * n_neg:
            best = max(best, tp / n_pos)
    return best


def brute_average_precision(y, p):
    n_pos, ap, prev_recall = sum(y), 0.0, 0.0
    for t in sorted(set(p), reverse=True):
        tp, fp, _, _ = brute_confusion(y, p, t)
        ap += (tp / n_pos - prev_recall) * tp / (tp + fp)
        prev_recall = tp / n_pos
    return ap


def brute_ece(y, p, n_bins=10):
    total = 0.0
    for k in range(n_bins):
        members = [(s, label) for s, label in zip(p, y) if min(int(s * n_bins), n_bins - 1) == k]
        if members:
            mean_p = sum(s for s, _ in members) / len(members)
            freq = sum(label for _, label in members) / len(members)
            total += len(members) / len(y) * abs(mean_p - freq)
    return total


def delong_1988(y, p_a, p_b):
    """Original DeLong et al. (1988) placement-value formulas, O(m n) loops."""
    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    pos = [i for i, t in enumerate(y) if t == 1]
    neg = [i for i, t in enumerate(y) if t == 0]
    m, n = len(pos), len(neg)
    v10, v01, aucs = [], [], []
    for sc in (p_a, p_b):
        v10.append([sum(psi(sc[i], sc[j]) for j in neg) / n for i in pos])
        v01.append([sum(psi(sc[i], sc[j]) for i in pos) / m for j in neg])
        aucs.append(sum(v10[-1]) / m)

    def cov(u, v):
        mu, mv = sum(u) / len(u), sum(v) / len(v)
        return sum((a - mu) * (b - mv) for a, b in zip(u, v)) / (len(u) - 1)

    s = [[cov(v10[r], v10[c]) / m + cov(v01[r], v01[c]) / n for c in range(2)] for r in range(2)]
    var = s[0][0] + s[1][1] - 2 * s[0][1]
    diff = aucs[0] - aucs[1]
    if abs(diff) < 1e-12:
        return aucs[0], aucs[1], 0.0, 1.0
    if var <= 1e-12 * (s[0][0] + s[1][1]):
        return aucs[0], aucs[1], math.copysign(math.inf, diff), 0.0
    z = diff / math.sqrt(var)
    return aucs[0], aucs[1], z, 2 * norm.sf(abs(z))


# ---------- point metrics ----------

@FAST
@given(labelled(), st.sampled_from([None, 0.0, 0.3, 0.5, 0.75, 1.0]))
def test_binary_metrics_match_brute_force(data, threshold):
    y, p = data
    yl, pl = y.tolist(), p.tolist()
    got = S.binary_metrics(y, p, threshold)
    assert list(got) == list(S.METRIC_NAMES)
    tp, fp, tn, fn = brute_confusion(yl, pl, 0.5 if threshold is None else threshold)
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    expected = {
        "accuracy": (tp + tn) / len(yl), "auc": brute_auc(yl, pl), "sensitivity": sens, "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2, "f1": 2 * tp / (2 * tp + fp + fn),
        "average_precision": brute_average_precision(yl, pl),
        "sens_at_spec90": brute_sens_at_spec(yl, pl, 0.90), "sens_at_spec95": brute_sens_at_spec(yl, pl, 0.95),
        "pauc_sens80": brute_pauc(yl, pl), "brier": sum((s - t) ** 2 for s, t in zip(pl, yl)) / len(yl),
        "ece": brute_ece(yl, pl), "n": len(yl), "n_pos": sum(yl), "n_neg": len(yl) - sum(yl),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
        assert isinstance(got[name], float)


def test_known_values():
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.5, 0.4, 0.3, 0.1, 0.05])
    m = S.binary_metrics(y, p)
    assert m["auc"] == pytest.approx(22 / 25)
    assert m["pauc_sens80"] == pytest.approx(0.2 * 0.4)  # TPR 0.8 -> 1 happens at FPR 0.6
    assert m["sens_at_spec90"] == pytest.approx(0.8) and m["sens_at_spec95"] == pytest.approx(0.8)
    assert (m["sensitivity"], m["specificity"]) == (0.8, 0.8)  # the benign 0.5 is called malignant (p >= 0.5)
    assert S.binary_metrics(y, y.astype(float))["pauc_sens80"] == pytest.approx(0.2)  # perfect: maximum 0.2
    assert S.binary_metrics(y, 1.0 - y)["pauc_sens80"] == pytest.approx(0.0)


def test_threshold_tie_at_half_is_malignant():
    m = S.binary_metrics([1, 0], [0.5, 0.49])
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0


@FAST
@given(labelled(min_pos=0, min_neg=0).filter(lambda d: len(d[0]) > 0))
def test_reliability_curve_and_ece(data):
    y, p = data
    rc = S.reliability_curve(y, p)
    assert rc.counts.sum() == len(y) and len(rc.bin_centers) == 10
    for k in range(10):
        members = [i for i, s in enumerate(p) if min(int(s * 10), 9) == k]
        assert rc.counts[k] == len(members)
        if members:
            assert rc.mean_predicted[k] == pytest.approx(np.mean(p[members]))
            assert rc.observed_frequency[k] == pytest.approx(np.mean(y[members]))
        else:
            assert np.isnan(rc.mean_predicted[k]) and np.isnan(rc.observed_frequency[k])
    assert S.expected_calibration_error(y, p) == pytest.approx(brute_ece(y.tolist(), p.tolist()), abs=1e-12)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_metrics_are_nan_with_reason(label):
    y, p = np.full(5, label), np.linspace(0, 1, 5)
    m, reasons = S.binary_metrics(y, p), S.undefined_reasons(y)
    assert math.isnan(m["auc"]) and "auc" in reasons and "no" in reasons["auc"]
    for name, value in m.items():
        assert math.isnan(value) == (name in reasons), name
    assert not math.isnan(m["brier"]) and not math.isnan(m["ece"]) and not math.isnan(m["accuracy"])
    assert S.undefined_reasons([0, 1]) == {}


@pytest.mark.parametrize("y, p, message", [
    ([0, 1], [0.1], "same length"),
    ([], [], "empty"),
    ([0, 1], [0.1, float("nan")], "NaN or infinite"),
    ([0, 1], [0.1, float("inf")], "NaN or infinite"),
    ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
    ([0, 1], [-0.1, 0.5], r"\[0, 1\]"),
    ([0, 2], [0.1, 0.5], "only 0"),
    ([0, float("nan")], [0.1, 0.5], "only 0"),
    (["a", "b"], [0.1, 0.5], "only 0"),
    ([[0, 1]], [[0.1, 0.5]], "1-D"),
])
def test_bad_input_raises(y, p, message):
    with pytest.raises(ValueError, match=message):
        S.validate_predictions(y, p)
    with pytest.raises(ValueError, match=message):
        S.binary_metrics(y, p)


# ---------- bootstrap ----------

@FAST
@given(labelled(min_pos=0, min_neg=0).filter(lambda d: len(d[0]) > 0), st.integers(0, 2**32 - 1))
def test_vectorised_resample_metrics_equal_binary_metrics(data, seed):
    y, p = data
    idx = S._stratified_indices(y, 4, np.random.default_rng(seed))
    assert np.all(np.sort(y[idx], axis=1) == np.sort(y))  # stratified: class counts kept
    vec = S._resample_metrics(y, p, idx, list(S.METRIC_NAMES), 0.5)
    for b in range(len(idx)):
        ref = S.binary_metrics(y[idx[b]], p[idx[b]])
        for name in S.METRIC_NAMES:
            assert vec[name][b] == pytest.approx(ref[name], abs=1e-12, nan_ok=True), name


def _binormal(rng, n_pos, n_neg, d):
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, norm.cdf(np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)])


def test_bootstrap_reproducible_and_contains_estimate():
    y, p = _binormal(np.random.default_rng(3), 150, 350, 1.2)
    a = S.bootstrap_ci(y, p, None, n_resamples=300, seed=7)
    assert a == S.bootstrap_ci(y, p, None, n_resamples=300, seed=7)
    assert a != S.bootstrap_ci(y, p, None, n_resamples=300, seed=8)
    point = S.binary_metrics(y, p)
    assert list(a) == list(S.METRIC_NAMES)
    for name, (low, high) in a.items():
        assert low <= point[name] <= high, name
    assert a["n_pos"] == (150.0, 150.0)


def test_bootstrap_single_class_and_bad_names():
    ci = S.bootstrap_ci(np.zeros(20, int), np.linspace(0, 1, 20), ["auc", "brier", "specificity"], 50)
    assert all(math.isnan(v) for v in ci["auc"]) and ci["brier"][0] <= ci["brier"][1]
    with pytest.raises(ValueError, match="Unknown metric"):
        S.bootstrap_ci([0, 1], [0.2, 0.8], ["auroc"])
    with pytest.raises(ValueError, match="alpha"):
        S.bootstrap_ci([0, 1], [0.2, 0.8], ["auc"], alpha=1.5)


def test_bootstrap_auc_coverage_binormal():
    d = 1.0
    true_auc = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(2024)
    hits = 0
    for i in range(200):
        y, p = _binormal(rng, 60, 90, d)
        low, high = S.bootstrap_ci(y, p, ["auc"], n_resamples=200, seed=i)["auc"]
        hits += low <= true_auc <= high
    assert 0.88 <= hits / 200 <= 0.99


# ---------- DeLong ----------

@FAST
@given(labelled(min_pos=2, min_neg=2, max_n=30), st.data())
def test_delong_matches_1988_formulas(data, draw):
    y, p_a = data
    p_b = np.array(draw.draw(st.lists(st.sampled_from(GRID) | st.floats(0, 1), min_size=len(y), max_size=len(y))))
    got = S.delong_test(y, p_a, p_b)
    ref = delong_1988(y.tolist(), p_a.tolist(), p_b.tolist())
    assert got[:2] == pytest.approx(ref[:2], abs=1e-12)
    assert got[3] == pytest.approx(ref[3], abs=1e-8)
    assert got[2] == pytest.approx(ref[2], rel=1e-8, abs=1e-8)


def test_delong_known_value_and_identical():
    # positives A (0.9, 0.4) vs negatives (0.5, 0.1): AUC 3/4, var 0.125; B separates perfectly: AUC 1, var 0
    y = np.array([1, 1, 0, 0])
    auc_a, auc_b, z, pval = S.delong_test(y, [0.9, 0.4, 0.5, 0.1], [0.8, 0.7, 0.6, 0.2])
    assert (auc_a, auc_b) == (0.75, 1.0)
    assert z == pytest.approx(-0.25 / math.sqrt(0.125))
    assert pval == pytest.approx(0.4795001221869535, abs=1e-12)
    p = np.random.default_rng(0).random(30)
    y = np.r_[np.ones(10, int), np.zeros(20, int)]
    assert S.delong_test(y, p, p)[2:] == (0.0, 1.0)
    assert S.delong_test(y, p, p ** 2)[2:] == (0.0, 1.0)  # same ranking
    with pytest.raises(ValueError, match="at least two"):
        S.delong_test([1, 0, 0], [0.2, 0.3, 0.4], [0.5, 0.1, 0.2])


# ---------- thresholds ----------

@FAST
@given(labelled())
def test_youden_threshold_brute_force(data):
    y, p = data
    yl, pl = y.tolist(), p.tolist()

    def youden(t):
        tp, fp, tn, fn = brute_confusion(yl, pl, t)
        return tp / (tp + fn) + tn / (tn + fp) - 1

    t = S.youden_threshold(y, p)
    assert t in pl
    assert youden(t) == pytest.approx(max(youden(s) for s in set(pl)), abs=1e-12)


@FAST
@given(labelled(min_neg=0), st.sampled_from([0.1, 0.5, 0.8, 0.9, 0.95, 1.0]))
def test_threshold_for_sensitivity_brute_force(data, target):
    y, p = data
    yl, pl = y.tolist(), p.tolist()
    frac = Fraction(str(target))

    def reaches(t):
        tp, _, _, fn = brute_confusion(yl, pl, t)
        return tp * frac.denominator >= frac.numerator * (tp + fn)

    assert S.threshold_for_sensitivity(y, p, target) == max(t for t in set(pl) if reaches(t))


def test_threshold_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="both"):
        S.youden_threshold([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="malignant"):
        S.threshold_for_sensitivity([0, 0], [0.2, 0.3], 0.9)
    with pytest.raises(ValueError, match="target"):
        S.threshold_for_sensitivity([0, 1], [0.2, 0.3], 0.0)
