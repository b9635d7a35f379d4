"""The cross-validation table: each fold model's metrics on its held-out fold of train/ and,
per variant, their mean and SD over folds (and seeds), plus the pooled out-of-fold AUC.

    melanoma-bench run --set data.cv_folds=5     # writes cv_val_predictions.csv, then this

A pure function of ``cv_val_predictions.csv`` (variant, seed, fold, file, label,
prob_malignant): ``add_to_report(out_dir)`` adds ``cross_validation`` to results.json and a
section to results.md, so ``melanoma-bench report`` rebuilds it without a model.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from melanoma.evaluation import metrics
from melanoma.util import atomic
from melanoma.util.errors import UserError
from melanoma.util.names import cell_read

log = logging.getLogger(__name__)

FILE = "cv_val_predictions.csv"
COLUMNS = ("variant", "seed", "fold", "file", "label", "prob_malignant")
METRICS = ("auc", "accuracy", "sensitivity", "specificity", "brier")  # at argmax (p >= 0.5)
HEADING = "## Cross-validation"


def read(path: Path) -> pd.DataFrame:
    """``cv_val_predictions.csv`` checked: the columns, labels 0/1, probabilities in [0, 1]."""
    try:
        frame = pd.read_csv(path, dtype={"variant": str, "file": str})
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable cross-validation predictions ({error})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in ("variant", "file"):  # undo csv_safe's quote before = + - @
        frame[column] = frame[column].map(cell_read)
    for _, group in frame.groupby(["variant", "seed", "fold"], sort=False):
        try:
            metrics.validate_predictions(group["label"].to_numpy(),
                                         group["prob_malignant"].to_numpy())
        except ValueError as error:
            raise UserError(f"{path}: {error}") from None
    return frame


def fold_rows(frame: pd.DataFrame) -> list[dict]:
    """One row per (variant, seed, fold): n, n_pos and METRICS on the fold's validation part
    (NaN where undefined, e.g. AUC of a fold with one class)."""
    rows = []
    for (variant, seed, fold), g in frame.groupby(["variant", "seed", "fold"], sort=False):
        scores = metrics.binary_metrics(g["label"].to_numpy(), g["prob_malignant"].to_numpy())
        rows.append({"variant": variant, "seed": int(seed), "fold": int(fold), "n": len(g),
                     "n_pos": int(g["label"].sum()), **{m: scores[m] for m in METRICS}})
    return rows


def _mean_sd(values) -> tuple[float, float]:
    finite = np.asarray([v for v in values if np.isfinite(v)], float)
    if not len(finite):
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")


def summary_rows(frame: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """Per variant: the number of fold models, each metric's mean and sample SD over them
    (``<metric>_mean``, ``<metric>_sd``), and ``oof_auc``: the AUC of all out-of-fold
    predictions of a seed pooled (each training image once), averaged over seeds."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        row = {"variant": variant, "k": len({r["fold"] for r in mine}),
               "n_models": len(mine), "seeds": sorted({r["seed"] for r in mine})}
        for name in METRICS:
            row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd([r[name] for r in mine])
        pooled = [metrics.binary_metrics(g["label"].to_numpy(),
                                         g["prob_malignant"].to_numpy())["auc"]
                  for _, g in frame[frame["variant"] == variant].groupby("seed")]
        row["oof_auc"] = _mean_sd(pooled)[0]
        out.append(row)
    return out


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _pm(row: dict, name: str) -> str:
    sd = row[f"{name}_sd"]
    return _fmt(row[f"{name}_mean"]) + ("" if not np.isfinite(sd) else f" ± {_fmt(sd)}")


def markdown(summary: list[dict], rows: list[dict]) -> str:
    """The results.md section: the mean ± SD table, then every fold's row."""
    k = max(r["k"] for r in summary)
    head = (f"{HEADING}\n\n{k}-fold cross-validation of train/ (stratified; grouped by lesion "
            f"where the manifest names one). Each fold model is scored on its held-out fold at "
            f"argmax (p >= 0.5); mean ± sample SD over the fold models (and seeds); pooled "
            f"out-of-fold AUC: every training image's prediction by the model that did not "
            f"train on it.\n\n")
    table = tabulate([[r["variant"], r["n_models"], *(_pm(r, m) for m in METRICS),
                       _fmt(r["oof_auc"])] for r in summary],
                     headers=["variant", "models", *(f"{m} (mean ± SD)" for m in METRICS),
                              "pooled OOF AUC"], tablefmt="github", disable_numparse=True)
    per_fold = tabulate([[r["variant"], r["seed"], r["fold"], r["n"], r["n_pos"],
                          *(_fmt(r[m]) for m in METRICS)] for r in rows],
                        headers=["variant", "seed", "fold", "n", "malignant", *METRICS],
                        tablefmt="github", disable_numparse=True)
    return f"{head}{table}\n\n### Per fold\n\n{per_fold}\n"


def summarise(out_dir: Path) -> dict | None:
    """{"summary", "folds"} of ``out_dir/cv_val_predictions.csv``; None without the file."""
    out_dir = Path(out_dir)
    if not (out_dir / FILE).is_file():
        return None
    frame = read(out_dir / FILE)
    rows = fold_rows(frame)
    return {"summary": summary_rows(frame, rows), "folds": rows}


def html_section(cv: dict | None) -> str:
    """index.html's cross-validation section (mean ± SD per variant); "" without folds."""
    if not cv:
        return ""
    import html

    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ("variant", "models", *(f"{m} (mean ± SD)" for m in METRICS),
                    "pooled OOF AUC"))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
        r["variant"], r["n_models"], *(_pm(r, m) for m in METRICS), _fmt(r["oof_auc"])))
        + "</tr>" for r in cv["summary"])
    k = max(r["k"] for r in cv["summary"])
    return (f"<h2>Cross-validation</h2><p class='note'>{k}-fold cross-validation of train/: "
            f"each fold model scored on its held-out fold at argmax; mean ± sample SD over "
            f"the fold models (and seeds); every fold's row is in results.md and "
            f"results.json.</p><div class='scroll'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def add_to_report(out_dir: Path, cv: dict | None = None) -> dict | None:
    """With ``out_dir/cv_val_predictions.csv``: add ``cross_validation`` ({"folds",
    "summary"}) to results.json and the section to results.md; returns it (None without).
    ``cv``: ``summarise(out_dir)``, when already computed."""
    out_dir = Path(out_dir)
    cv = cv or summarise(out_dir)
    if cv is None:
        return None
    summary, rows = cv["summary"], cv["folds"]
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    results["cross_validation"] = cv
    md = (out_dir / "results.md").read_text(encoding="utf-8").split(f"\n{HEADING}\n")[0]
    atomic.write_text(out_dir / "results.md", md.rstrip("\n") + "\n\n" + markdown(summary, rows))
    atomic.write_json(out_dir / "results.json", results)
    log.info("cross-validation table: %d fold models of %d variant(s) in results.md",
             len(rows), len(summary))
    return cv
