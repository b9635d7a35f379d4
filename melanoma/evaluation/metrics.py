"""Evaluation statistics for binary melanoma classifiers (y: 0 benign / 1 malignant, p: malignant probability).

Point metrics, stratified vectorised bootstrap CIs, the paired DeLong test, calibration and threshold selection.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats as sps
from sklearn import metrics as skm

from melanoma.evaluation import metric_table

DEFAULT_THRESHOLD = 0.5
ECE_BINS = 10
PAUC_MIN_TPR = 0.8
SPEC_TARGETS = {"sens_at_spec90": 0.90, "sens_at_spec95": 0.95}
METRIC_NAMES = metric_table.ALL_NAMES
_NEEDS_POS = metric_table.needing("pos")
_NEEDS_NEG = metric_table.needing("neg")
_NEEDS_BOTH = metric_table.needing("both")
_CONFUSION_NAMES = metric_table.AT_OPERATING_POINT
_RATE_TOL = 1e-12  # slack when comparing rates such as specificity >= 0.9 computed in floating point
_CHUNK_ELEMENTS = 2_000_000  # bootstrap rows are processed in chunks of about this many resampled predictions


class ReliabilityCurve(NamedTuple):
    """Per-bin reliability-diagram data; mean_predicted and observed_frequency are NaN for empty bins."""

    bin_centers: np.ndarray
    mean_predicted: np.ndarray
    observed_frequency: np.ndarray
    counts: np.ndarray


def _validate_labels(y) -> np.ndarray:
    """Return y as a 1-D int64 array of 0/1 labels, or raise ValueError."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}.")
    if y.size == 0:
        raise ValueError("y is empty; at least one prediction is required.")
    if y.dtype.kind not in "biuf" or not np.all(np.isin(y, (0, 1))):
        bad = [v for v in np.unique(y.astype(object)) if v not in (0, 1)][:5]
        raise ValueError(f"y must contain only 0 (benign) and 1 (malignant), found {bad}.")
    return y.astype(np.int64)


def validate_predictions(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and malignant probabilities; return them as (int64, float64) arrays or raise ValueError."""
    y_arr, p_arr = np.asarray(y), np.asarray(p)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError(f"y and p must be 1-D arrays, got shapes {y_arr.shape} and {p_arr.shape}.")
    if len(y_arr) != len(p_arr):
        raise ValueError(f"y and p must have the same length, got {len(y_arr)} and {len(p_arr)}.")
    if len(y_arr) == 0:
        raise ValueError("y and p are empty; at least one prediction is required.")
    if p_arr.dtype.kind not in "iuf":
        raise ValueError(f"p must be numeric probabilities, got dtype {p_arr.dtype}.")
    p_arr = p_arr.astype(np.float64)
    if not np.all(np.isfinite(p_arr)):
        n_bad = int(np.sum(~np.isfinite(p_arr)))
        raise ValueError(f"p contains {n_bad} NaN or infinite values; probabilities must be finite.")
    if p_arr.min() < 0.0 or p_arr.max() > 1.0:
        raise ValueError(f"p must lie in [0, 1], got values in [{p_arr.min():g}, {p_arr.max():g}].")
    return _validate_labels(y_arr), p_arr


def _resolve_threshold(threshold) -> float:
    """Return the decision threshold (default 0.5), rejecting non-finite values."""
    t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
    return t


def undefined_reasons(y) -> dict[str, str]:
    """Map each metric that is NaN for labels y (missing class) to a one-sentence reason, in METRIC_NAMES order."""
    y = _validate_labels(y)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    reasons = {}
    for name in METRIC_NAMES:
        if n_pos == 0 and name in _NEEDS_POS + _NEEDS_BOTH:
            reasons[name] = f"{name} is undefined because y has no malignant (1) cases."
        elif n_neg == 0 and name in _NEEDS_NEG + _NEEDS_BOTH:
            reasons[name] = f"{name} is undefined because y has no benign (0) cases."
    return reasons


def _confusion_metrics(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """Accuracy, sensitivity, specificity, balanced accuracy, F1 from (arrays of) counts; NaN if a class is absent."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        f1 = np.where(tp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        return {
            "accuracy": (tp + tn) / (tp + fp + tn + fn),
            "sensitivity": sens,
            "specificity": spec,
            "balanced_accuracy": (sens + spec) / 2,
            "f1": f1,
        }


def _sens_at_spec(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR over ROC vertices with specificity >= target (no interpolation: an attainable operating point)."""
    return float(tpr[fpr <= 1.0 - target + _RATE_TOL].max())


def _isic_pauc(y: np.ndarray, p: np.ndarray, min_tpr: float = PAUC_MIN_TPR) -> float:
    """ISIC 2019/2020 partial AUC above min_tpr (raw, max 1 - min_tpr): flip labels/scores, area left of max_fpr."""
    v_gt, v_pred = np.abs(y - 1), -p
    max_fpr = abs(1 - min_tpr)
    fpr, tpr, _ = skm.roc_curve(v_gt, v_pred)
    stop = np.searchsorted(fpr, max_fpr, "right")
    tpr_cut = np.interp(max_fpr, [fpr[stop - 1], fpr[stop]], [tpr[stop - 1], tpr[stop]])
    return float(skm.auc(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], tpr_cut)))


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability: bin k holds k <= p*n_bins < k+1; p == 1 goes to the last bin."""
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def reliability_curve(y, p, n_bins: int = ECE_BINS) -> ReliabilityCurve:
    """Reliability-diagram data over n_bins equal-width bins of [0, 1] (all bins returned, empty ones as NaN)."""
    y, p = validate_predictions(y, p)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    n_bins = int(n_bins)
    b = _bin_index(p, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.where(counts > 0, np.bincount(b, weights=p, minlength=n_bins) / counts, np.nan)
        freq = np.where(counts > 0, np.bincount(b, weights=y, minlength=n_bins) / counts, np.nan)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    return ReliabilityCurve(centers, mean_p, freq, counts)


def expected_calibration_error(y, p, n_bins: int = ECE_BINS) -> float:
    """ECE: count-weighted mean of |mean predicted - observed frequency| over non-empty equal-width bins."""
    rc = reliability_curve(y, p, n_bins)
    full = rc.counts > 0
    gaps = np.abs(rc.mean_predicted[full] - rc.observed_frequency[full])
    return float(np.sum(rc.counts[full] * gaps) / rc.counts.sum())


def binary_metrics(y, p, threshold=None) -> dict[str, float]:
    """All METRIC_NAMES as floats; malignant predicted iff p >= threshold (default 0.5); NaN where undefined.

    p >= 0.5 equals argmax of the 2-column softmax [1 - p, p] except at an exact tie p == 0.5 (here: malignant).
    Reasons for NaN values come from undefined_reasons(y).
    """
    y, p = validate_predictions(y, p)
    t = _resolve_threshold(threshold)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    out = dict.fromkeys(METRIC_NAMES, float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tn, fp, fn, tp = skm.confusion_matrix(y, (p >= t).astype(np.int64), labels=[0, 1]).ravel()
        out.update({k: float(v) for k, v in _confusion_metrics(tp, fp, tn, fn).items()})
        if n_pos and n_neg:
            out["auc"] = float(skm.roc_auc_score(y, p))
            fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
            for name, target in SPEC_TARGETS.items():
                out[name] = _sens_at_spec(fpr, tpr, target)
            out["pauc_sens80"] = _isic_pauc(y, p)
        if n_pos:
            out["average_precision"] = float(skm.average_precision_score(y, p))
        out["brier"] = float(skm.brier_score_loss(y, p, labels=[0, 1]))
    out["ece"] = expected_calibration_error(y, p)
    out.update(n=float(len(y)), n_pos=float(n_pos), n_neg=float(n_neg))
    return out


def _stratified_indices(y: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) indices into y: positives resampled in the first n_pos columns, negatives in the rest."""
    blocks = []
    for members in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        if len(members):
            blocks.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    return np.hstack(blocks)


def _row_bincount(codes: np.ndarray, n_codes: int, weights=None) -> np.ndarray:
    """Per-row bincount of a (rows, cols) code matrix -> (rows, n_codes)."""
    rows = codes.shape[0]
    flat = (codes + n_codes * np.arange(rows)[:, None]).ravel()
    w = None if weights is None else np.ravel(weights)
    return np.bincount(flat, weights=w, minlength=rows * n_codes).reshape(rows, n_codes)


def _roc_counts(P_codes: np.ndarray, Y: np.ndarray, n_codes: int):
    """Per-row counts of positives/negatives at each distinct score (descending) and their cumulative sums."""
    cnt_pos = _row_bincount(P_codes, n_codes, Y)
    cnt_neg = _row_bincount(P_codes, n_codes, 1.0 - Y)
    return cnt_pos, cnt_neg, np.cumsum(cnt_pos, axis=1), np.cumsum(cnt_neg, axis=1)


def _vector_pauc(tpr: np.ndarray, fpr: np.ndarray, min_tpr: float = PAUC_MIN_TPR) -> np.ndarray:
    """Row-wise area of (1 - FPR) over TPR in [min_tpr, 1] along piecewise-linear ROC curves (same as ISIC pAUC)."""
    zero = np.zeros((tpr.shape[0], 1))
    tpr, fpr = np.hstack([zero, tpr]), np.hstack([zero, fpr])
    t0, t1, f0, f1 = tpr[:, :-1], tpr[:, 1:], fpr[:, :-1], fpr[:, 1:]
    lo = np.maximum(t0, min_tpr)
    rise = t1 - t0
    with np.errstate(divide="ignore", invalid="ignore"):
        f_lo = np.where(rise > 0, f0 + (f1 - f0) * (lo - t0) / rise, f0)
    width = np.clip(t1 - lo, 0.0, None)
    return np.sum(width * (1.0 - (f_lo + f1) / 2.0), axis=1)


def _resample_metrics(y, p, idx, names, threshold) -> dict[str, np.ndarray]:
    """Metric values for each row of the resample index matrix idx, vectorised across rows (no per-row loop)."""
    undefined = undefined_reasons(y)
    rows = idx.shape[0]
    P, Y = p[idx], y[idx].astype(np.float64)
    n_pos_r, n = Y.sum(axis=1), idx.shape[1]
    n_neg_r = n - n_pos_r
    out = {name: np.full(rows, np.nan) for name in names if name in undefined}
    todo = [name for name in names if name not in out]
    if set(todo) & set(_CONFUSION_NAMES):
        pred = P >= threshold
        tp, fp = np.sum(pred * Y, axis=1), np.sum(pred * (1.0 - Y), axis=1)
        conf = _confusion_metrics(tp, fp, n_neg_r - fp, n_pos_r - tp)
        out.update({k: v for k, v in conf.items() if k in todo})
    if set(todo) & {"auc", "average_precision", "pauc_sens80", *SPEC_TARGETS}:
        distinct, inverse = np.unique(-p, return_inverse=True)  # code 0 = highest score
        cnt_pos, cnt_neg, tp_c, fp_c = _roc_counts(inverse[idx], Y, len(distinct))
        npos, nneg = n_pos_r[:, None], n_neg_r[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr, fpr = tp_c / npos, fp_c / nneg
            if "auc" in todo:  # Mann-Whitney U with ties counted 1/2
                out["auc"] = np.sum(cnt_pos * (nneg - fp_c + 0.5 * cnt_neg), axis=1) / (n_pos_r * n_neg_r)
            if "average_precision" in todo:  # sklearn's step-wise AP: sum of recall increments x precision
                precision = np.where(cnt_pos > 0, tp_c / (tp_c + fp_c), 0.0)
                out["average_precision"] = np.sum(cnt_pos * precision, axis=1) / n_pos_r
        for name, target in SPEC_TARGETS.items():
            if name in todo:
                out[name] = np.max(np.where(fpr <= 1.0 - target + _RATE_TOL, tpr, 0.0), axis=1)
        if "pauc_sens80" in todo:
            out["pauc_sens80"] = _vector_pauc(tpr, fpr)
    if "brier" in todo:
        out["brier"] = np.mean((P - Y) ** 2, axis=1)
    if "ece" in todo:
        bins = _bin_index(p, ECE_BINS)[idx]
        gap = _row_bincount(bins, ECE_BINS, P) - _row_bincount(bins, ECE_BINS, Y)
        out["ece"] = np.sum(np.abs(gap), axis=1) / n
    for name, value in (("n", np.full(rows, float(n))), ("n_pos", n_pos_r), ("n_neg", n_neg_r)):
        if name in todo:
            out[name] = value
    return {name: out[name] for name in names}


def check_bootstrap_settings(names, n_resamples, alpha, known=METRIC_NAMES,
                             error: type[Exception] = ValueError) -> list[str]:
    """The metric names (all in ``known``), resample count and alpha of a bootstrap, checked;
    ``error``: the exception to raise (a library caller's ValueError, a user's UserError)."""
    names = list(names)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise error(f"Unknown metric names {unknown}; choose from {list(known)}.")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise error(f"n_resamples must be a positive integer, got {n_resamples!r}.")
    if not 0.0 < alpha < 1.0:
        raise error(f"alpha must lie strictly between 0 and 1, got {alpha!r}.")
    return names


def bootstrap_ci(y, p, metric_names=None, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0,
                 threshold=None) -> dict[str, tuple[float, float]]:
    """Stratified percentile bootstrap CIs {name: (low, high)}; class counts are kept; undefined metrics give NaNs.

    All resample indices are drawn at once from numpy's default_rng(seed); metrics are vectorised across resamples.
    """
    y, p = validate_predictions(y, p)
    names = check_bootstrap_settings(METRIC_NAMES if metric_names is None else metric_names,
                                     n_resamples, alpha)
    t = _resolve_threshold(threshold)
    idx = _stratified_indices(y, int(n_resamples), np.random.default_rng(seed))
    values = {name: np.empty(len(idx)) for name in names}
    step = max(1, _CHUNK_ELEMENTS // len(y))
    for start in range(0, len(idx), step):
        for name, v in _resample_metrics(y, p, idx[start:start + step], names, t).items():
            values[name][start:start + step] = v
    out = {}
    for name, v in values.items():
        if np.all(np.isfinite(v)):
            low, high = np.quantile(v, [alpha / 2, 1 - alpha / 2])
            out[name] = (float(low), float(high))
        else:
            out[name] = (float("nan"), float("nan"))
    return out


def delong_test(y, p_a, p_b) -> tuple[float, float, float, float]:
    """Paired DeLong test of equal ROC AUCs (fast midrank algorithm, Sun & Xu 2014): (auc_a, auc_b, z, two-sided p).

    z > 0 means p_a has the higher AUC. A zero AUC difference gives (z, p) = (0, 1); a nonzero difference with
    zero variance gives z = +-inf, p = 0. Needs at least two cases of each class.
    """
    y, p_a = validate_predictions(y, p_a)
    _, p_b = validate_predictions(y, p_b)
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong_test needs at least two malignant and two benign cases, got {m} and {n}.")
    scores = np.vstack([p_a, p_b])
    x, z_neg = scores[:, pos], scores[:, ~pos]
    tx, ty = sps.rankdata(x, axis=1), sps.rankdata(z_neg, axis=1)
    tz = sps.rankdata(np.hstack([x, z_neg]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (tz[:, :m] - tx) / n  # placement of each positive among negatives
    v01 = 1.0 - (tz[:, m:] - ty) / m  # placement of each negative among positives
    s = np.cov(v10) / m + np.cov(v01) / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    diff = aucs[0] - aucs[1]
    if abs(diff) < 1e-12:  # AUCs differ by multiples of 1/(2mn), so this is an exact tie
        z, p_value = 0.0, 1.0
    elif var <= 1e-12 * (s[0, 0] + s[1, 1]):
        z, p_value = math.copysign(math.inf, diff), 0.0
    else:
        z = float(diff / math.sqrt(var))
        p_value = float(2 * sps.norm.sf(abs(z)))
    return float(aucs[0]), float(aucs[1]), z, p_value


def _require_both_classes(y: np.ndarray, what: str) -> None:
    """Raise ValueError unless y holds at least one case of each class."""
    if y.min() == y.max():
        raise ValueError(f"{what} needs both malignant and benign cases, but y has only class {int(y[0])}.")


def youden_threshold(y, p) -> float:
    """Score threshold maximising Youden's J = sens + spec - 1 for the rule p >= t (ties: highest threshold)."""
    y, p = validate_predictions(y, p)
    _require_both_classes(y, "youden_threshold")
    fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    best = 1 + int(np.argmax((tpr - fpr)[1:]))  # skip the infinite 'predict nothing' threshold
    return float(thresholds[best])


def threshold_for_sensitivity(y, p, target: float) -> float:
    """Highest threshold t such that sensitivity of p >= t on (y, p) is at least target (0 < target <= 1)."""
    y, p = validate_predictions(y, p)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target!r}.")
    pos_scores = np.sort(p[y == 1])[::-1]
    if len(pos_scores) == 0:
        raise ValueError("threshold_for_sensitivity needs at least one malignant case in y.")
    k = math.ceil(target * len(pos_scores) - 1e-9)  # number of positives that must score >= t
    return float(pos_scores[k - 1])
