"""Results rows from saved predictions: every metric with a 95% interval, DeLong vs best,
metrics at argmax and at a threshold chosen on the validation split.

    rows = evaluate(test_predictions, val_predictions, EvalSettings(seed=42))

One row per (variant, test set). Column names: ``accuracy`` etc. are at argmax (p >= 0.5);
``thr_accuracy`` etc. at the validation-chosen ``threshold``; ``<metric>_ci_low/high`` are
stratified-bootstrap percentile intervals; ``auc_delong_p`` is the paired DeLong p-value
of the row's AUC against ``delong_reference`` (the best AUC on the same test set). A metric
that cannot be computed is NaN (null in JSON) and ``undefined`` says why. ``degenerate``
(with ``degenerate_reason``) marks a model whose test or validation probabilities barely
vary (:mod:`melanoma.evaluation.degenerate`): it is never the reference and gets no p-value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from melanoma.evaluation import metric_table, metrics
from melanoma.evaluation.degenerate import degenerate_reason, split_reason
from melanoma.util.errors import UserError

CONFUSION = metric_table.AT_OPERATING_POINT  # also reported at the validation threshold
RANKING = metric_table.THRESHOLD_FREE
THRESHOLD_PREFIX = metric_table.THRESHOLD_PREFIX
NAN = float("nan")


@dataclass(frozen=True)
class EvalSettings:
    """What the tables depend on besides the predictions (stored in results.json)."""

    seed: int = 0
    bootstrap_resamples: int = 1000
    target_sensitivity: float | None = None  # None -> Youden's J
    threshold: float | None = None  # a given operating point instead of one chosen on validation

    def threshold_rule(self) -> str:
        if self.threshold is not None:
            return f"given threshold {self.threshold:g}"
        if self.target_sensitivity is None:
            return "Youden's J on validation"
        return f"sensitivity >= {self.target_sensitivity:g} on validation"


def checked(variant: str, split: str, y, p) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities, or a UserError naming the variant and split."""
    try:
        return metrics.validate_predictions(y, p)
    except ValueError as error:
        raise UserError(f"{split} predictions of variant {variant!r}: {error}") from None


def choose_threshold(y_val, p_val, settings: EvalSettings) -> tuple[float, str]:
    """(threshold, "") from the validation predictions (or the settings' given threshold),
    or (NaN, reason) when impossible."""
    if settings.threshold is not None:
        return float(settings.threshold), ""
    if y_val is None or len(y_val) == 0:
        return NAN, "no validation predictions saved"
    try:
        if settings.target_sensitivity is None:
            return metrics.youden_threshold(y_val, p_val), ""
        return metrics.threshold_for_sensitivity(y_val, p_val, settings.target_sensitivity), ""
    except ValueError as error:
        return NAN, f"threshold: {error}"


def _scores(y, p, threshold: float, settings: EvalSettings) -> dict:
    """Point metrics and intervals for one (variant, test set)."""
    row = {}
    point = metrics.binary_metrics(y, p)
    names = list(CONFUSION + RANKING)
    ci = metrics.bootstrap_ci(y, p, names, settings.bootstrap_resamples, seed=settings.seed)
    for name in names:
        row[name] = point[name]
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = ci[name]
    if math.isfinite(threshold):
        at_t = metrics.binary_metrics(y, p, threshold)
        ci_t = metrics.bootstrap_ci(y, p, list(CONFUSION), settings.bootstrap_resamples,
                                    seed=settings.seed, threshold=threshold)
    else:
        at_t, ci_t = {}, {}
    for name in CONFUSION:
        key = THRESHOLD_PREFIX + name
        row[key] = at_t.get(name, NAN)
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = ci_t.get(name, (NAN, NAN))
    return row


def _empty_scores() -> dict:
    names = [*CONFUSION, *RANKING, *(THRESHOLD_PREFIX + n for n in CONFUSION)]
    return {k: NAN for n in names for k in (n, f"{n}_ci_low", f"{n}_ci_high")}


def variant_row(variant: str, test_set: str, y, p, threshold: float, threshold_reason: str,
                settings: EvalSettings) -> dict:
    """One flat row; an empty test subset gives a row of undefined metrics, not an error."""
    row = {"variant": variant, "test_set": test_set, "n_test": int(len(y)),
           "n_pos": int(np.sum(y)), "n_neg": int(len(y) - np.sum(y)),
           "threshold": threshold, "threshold_rule": settings.threshold_rule()}
    reasons = {}
    if len(y) == 0:
        row.update(_empty_scores())
        reasons["all"] = f"the {test_set} test set is empty"
    else:
        row.update(_scores(y, p, threshold, settings))
        reasons.update(metrics.undefined_reasons(y))
        for name in CONFUSION:
            if name in reasons:
                reasons[THRESHOLD_PREFIX + name] = reasons[name]
    if threshold_reason:
        reasons["threshold"] = threshold_reason
    row["undefined"] = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    return row


def add_delong(rows: list[dict], probs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Set ``delong_reference`` and ``auc_delong_p`` on rows of one test set (in place).

    The reference is the row with the highest AUC among the models that are not degenerate;
    its own p-value is left empty, and so is a degenerate row's. Paired tests need the same
    images in the same order, which holds for rows of one test set.
    """
    finite = [r for r in rows if isinstance(r["auc"], float) and math.isfinite(r["auc"])
              and not r.get("degenerate")]
    best = max(finite, key=lambda r: r["auc"])["variant"] if finite else ""
    for row in rows:
        row["delong_reference"], row["auc_delong_p"] = best, NAN
        if not best or row["variant"] == best or row not in finite:
            continue
        (y, p), (_, p_best) = probs[row["variant"]], probs[best]
        try:
            row["auc_delong_p"] = metrics.delong_test(y, p, p_best)[3]
        except ValueError as error:
            row["undefined"] = "; ".join(filter(None, [row["undefined"], f"auc_delong_p: {error}"]))


def evaluate(test: pd.DataFrame, val: pd.DataFrame | None, settings: EvalSettings,
             clean_files: set[str] | None = None) -> list[dict]:
    """Rows for the full test set, then (when ``clean_files`` is given) the clean subset."""
    if test.empty:
        raise UserError("the test set is empty: there are no predictions to evaluate")
    val_groups = dict(tuple(val.groupby("variant", sort=False))) if val is not None else {}
    test_sets = [("full", None)] + ([("clean", clean_files)] if clean_files is not None else [])
    rows = []
    for test_set, keep in test_sets:
        subset_rows, probs = [], {}
        for name, group in test.groupby("variant", sort=False):
            y, p = checked(name, "test", group["label"].to_numpy(),
                           group["prob_malignant"].to_numpy())
            v = val_groups.get(name)
            y_val, p_val = (None, None) if v is None else checked(
                name, "validation", v["label"].to_numpy(), v["prob_malignant"].to_numpy())
            threshold, reason = choose_threshold(y_val, p_val, settings)
            why = split_reason({"test": degenerate_reason(p), "validation":
                                "" if p_val is None else degenerate_reason(p_val)})
            if keep is not None:
                mask = group["file"].isin(keep).to_numpy()
                y, p = y[mask], p[mask]
            probs[name] = (y, p)
            row = variant_row(name, test_set, y, p, threshold, reason, settings)
            subset_rows.append({**row, "degenerate": bool(why), "degenerate_reason": why})
        add_delong(subset_rows, probs)
        rows += subset_rows
    return rows
