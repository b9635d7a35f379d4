"""Results over training seeds: per-seed rows, per-variant rows with the mean over seeds,
the seed-to-seed SD and the combined interval (:mod:`melanoma.evaluation.variance`),
"within training noise" against the best variant, and published-vs-reproduced rows.

    rows, per_seed = variant_rows(test, val, settings, clean_files)

With one seed per variant the variant rows are exactly ``rows.evaluate``'s (test-image
bootstrap intervals, DeLong against the best) and say that training variance was not
measured. With several seeds every metric at argmax and every threshold-free metric is the
mean over seeds with ``<metric>_sd`` and a two-level (seeds x test images) interval;
``thr_*`` and ``threshold`` are means of the per-seed values (each seed's threshold chosen
on its own validation predictions; no interval); ``auc_diff_vs_best`` with its interval
and ``within_training_noise`` come from the paired hierarchical bootstrap.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from tabulate import tabulate

from melanoma.evaluation import degenerate, variance
from melanoma.evaluation.metric_table import BY_NAME, is_finite, number_text, with_ci_text
from melanoma.evaluation.rows import CONFUSION, THRESHOLD_PREFIX, EvalSettings, evaluate

NAN = float("nan")
NOT_MEASURED = variance.NOT_MEASURED
COMPARED = "auc"  # the metric of the "vs best" comparison


def with_seed(frame: pd.DataFrame | None, seed: int) -> pd.DataFrame | None:
    """``frame`` with a ``seed`` column (filled with ``seed`` when it has none)."""
    if frame is None or "seed" in frame.columns:
        return frame
    return frame.assign(seed=int(seed))


def multi_seed(predictions: pd.DataFrame) -> bool:
    """Whether some variant was trained with more than one seed."""
    return bool((predictions.groupby("variant", sort=False)["seed"].nunique() > 1).any())


def seed_rows(test: pd.DataFrame, val: pd.DataFrame | None, settings: EvalSettings,
              clean_files: set[str] | None = None) -> list[dict]:
    """``rows.evaluate`` for each seed on its own: one row per (test set, variant, seed)."""
    rows = []
    for seed in dict.fromkeys(test["seed"].tolist()):
        v = None if val is None else val[val["seed"] == seed]
        for row in evaluate(test[test["seed"] == seed], v, settings, clean_files):
            rows.append({"variant": row["variant"], "seed": int(seed),
                         **{k: x for k, x in row.items() if k != "variant"}})
    order = {name: i for i, name in enumerate(dict.fromkeys(test["variant"].tolist()))}
    return sorted(rows, key=lambda r: (r["test_set"] != "full", order[r["variant"]]))


def variant_rows(test: pd.DataFrame, val: pd.DataFrame | None, settings: EvalSettings,
                 clean_files: set[str] | None = None) -> tuple[list[dict], list[dict]]:
    """(one row per test set and variant, one row per test set, variant and seed): see the
    module docstring."""
    if not multi_seed(test):
        rows = evaluate(test, val, settings, clean_files)
        seed_of = {name: int(g["seed"].iloc[0]) for name, g in test.groupby("variant")}
        per_seed = [{"variant": r["variant"], "seed": seed_of[r["variant"]],
                     **{k: x for k, x in r.items() if k != "variant"}} for r in rows]
        for row in rows:
            row.update(n_seeds=1, seeds=[seed_of[row["variant"]]],
                       training_variance=NOT_MEASURED, within_training_noise=None)
        return rows, per_seed
    per_seed = seed_rows(test, val, settings, clean_files)
    sets = [("full", test)]
    if clean_files is not None:
        sets.append(("clean", test[test["file"].isin(clean_files)]))
    rows = []
    for test_set, subset in sets:
        rows += _set_rows(subset, test, [r for r in per_seed if r["test_set"] == test_set],
                          test_set, settings)
    return rows, per_seed


def _set_rows(subset: pd.DataFrame, test: pd.DataFrame, per_seed: list[dict], test_set: str,
              settings: EvalSettings) -> list[dict]:
    names = list(dict.fromkeys(test["variant"].tolist()))
    if subset.empty:
        return [{"variant": name, "test_set": test_set, "n_test": 0, "n_pos": 0, "n_neg": 0,
                 "n_seeds": int(test[test["variant"] == name]["seed"].nunique()),
                 "undefined": f"the {test_set} test set is empty"} for name in names]
    resamples = settings.bootstrap_resamples
    summary = variance.summarise(subset, n_resamples=resamples, seed=settings.seed)
    flagged = {r["variant"] for r in per_seed if r.get("degenerate")}
    comparisons = variance.compare_to_best(subset[~subset["variant"].isin(flagged)], COMPARED,
                                           n_resamples=resamples, seed=settings.seed)
    best = comparisons[0].b if comparisons else ""
    by_variant = {c.a: c for c in comparisons}
    rows = []
    for row in summary:
        mine = [r for r in per_seed if r["variant"] == row["variant"]]
        row = {"variant": row["variant"], "test_set": test_set,
               **{k: v for k, v in row.items() if k != "variant"}, **_degenerate(mine)}
        _threshold_means(row, mine)
        row["delong_reference"], row["auc_delong_p"] = best, NAN
        _comparison(row, by_variant.get(row["variant"]))
        rows.append(row)
    return rows


def _degenerate(per_seed: list[dict]) -> dict:
    """A variant is degenerate when any of its seeds is: its mean would mix rounding noise
    into the comparison."""
    bad = [r for r in per_seed if r.get("degenerate")]
    return {"degenerate": bool(bad), "degenerate_reason": "; ".join(
        f"seed {r['seed']}: {r['degenerate_reason']}" for r in bad)}


def _mean_sd(values: list) -> tuple[float, float | None]:
    finite = [v for v in values if is_finite(v)]
    if not finite:
        return NAN, None
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return float(np.mean(finite)), sd


def _threshold_means(row: dict, per_seed: list[dict]) -> None:
    """Means over seeds of the per-seed threshold and the metrics at it (no interval)."""
    row["threshold"], row["threshold_sd"] = _mean_sd([r.get("threshold") for r in per_seed])
    row["threshold_rule"] = per_seed[0].get("threshold_rule", "") if per_seed else ""
    for name in CONFUSION:
        key = THRESHOLD_PREFIX + name
        row[key], row[f"{key}_sd"] = _mean_sd([r.get(key) for r in per_seed])
        row[f"{key}_ci_low"] = row[f"{key}_ci_high"] = NAN
    reasons = dict.fromkeys(part for r in per_seed
                            for part in str(r.get("undefined") or "").split("; ") if part)
    row["undefined"] = "; ".join(reasons)


def _comparison(row: dict, comparison) -> None:
    """``auc_diff_vs_best`` [interval], its p and ``within_training_noise`` (None for the
    best row itself)."""
    if comparison is None:
        row.update(auc_diff_vs_best=NAN, auc_diff_ci_low=NAN, auc_diff_ci_high=NAN,
                   auc_diff_p=NAN, within_training_noise=None, comparison_note="")
        return
    row.update(auc_diff_vs_best=comparison.difference, auc_diff_ci_low=comparison.ci_low,
               auc_diff_ci_high=comparison.ci_high, auc_diff_p=comparison.p_value,
               within_training_noise=(comparison.within_training_noise
                                      if math.isfinite(comparison.ci_low) else None),
               comparison_note=comparison.note)


def published_rows(rows: list[dict], specs: dict[str, dict]) -> list[dict]:
    """Per (variant, metric) with a ``published`` value: the reproduced mean and interval
    (full test set) and whether the published value lies inside."""
    out = []
    for row in rows:
        if row.get("test_set", "full") != "full":
            continue
        for metric, value in (specs.get(row["variant"], {}).get("published") or {}).items():
            low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
            known = is_finite(low) and is_finite(high)
            out.append({"variant": row["variant"], "metric": metric, "published": float(value),
                        "reproduced": row.get(metric), "ci_low": low, "ci_high": high,
                        "n_seeds": row.get("n_seeds", 1),
                        "inside": bool(low <= value <= high) if known else None})
    return out


def auc_text(row: dict) -> str:
    """The AUC cell: value [interval], or the degenerate mark (its AUC is not a result)."""
    return degenerate.CELL if row.get("degenerate") else with_ci_text(row, "auc")


def noise_text(row: dict) -> str:
    """The "within training noise" cell."""
    if row.get("variant") == row.get("delong_reference"):
        return "best"
    flag = row.get("within_training_noise")
    return "n/a" if flag is None else ("yes" if flag else "no")


def markdown_seed_table(rows: list[dict]) -> str:
    """The headline table over seeds: means with the combined interval, the seed SD and
    the comparison with the best mean AUC."""
    headers = ["variant", "test set", "n", "seeds", "AUC mean [95% CI]", "AUC seed SD",
               "AUC - best [95% CI]", "within training noise", "accuracy @argmax",
               "accuracy SD", "sens @argmax", "spec @argmax", "threshold (val, mean)",
               "sens @thr", "spec @thr", "preprocessing"]
    table = []
    for row in rows:
        diff = "best" if row.get("variant") == row.get("delong_reference") else \
            with_ci_text({"d": row.get("auc_diff_vs_best"), "d_ci_low": row.get("auc_diff_ci_low"),
                      "d_ci_high": row.get("auc_diff_ci_high")}, "d")
        table.append([row.get("variant"), row.get("test_set", "full"), row.get("n_test"),
                      row.get("n_seeds"), auc_text(row), number_text(row.get("auc_sd")), diff,
                      noise_text(row), with_ci_text(row, "accuracy"), number_text(row.get("accuracy_sd")),
                      with_ci_text(row, "sensitivity"), with_ci_text(row, "specificity"),
                      number_text(row.get("threshold")), number_text(row.get("thr_sensitivity")),
                      number_text(row.get("thr_specificity")), row.get("spec", "")])
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def markdown_published(published: list[dict]) -> str:
    """Published value, reproduced mean [interval] and the verdict, one line per metric."""
    table = [[p["variant"], BY_NAME[p["metric"]].label, number_text(p["published"]),
              with_ci_text({"m": p["reproduced"], "m_ci_low": p["ci_low"],
                        "m_ci_high": p["ci_high"]}, "m"), p["n_seeds"],
              "n/a" if p["inside"] is None else ("inside" if p["inside"] else "OUTSIDE")]
             for p in published]
    return tabulate(table, headers=["variant", "metric", "published", "reproduced [95% CI]",
                                    "seeds", "published value"], tablefmt="github",
                    disable_numparse=True)
