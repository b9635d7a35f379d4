"""Reports as pure functions of saved predictions: metrics rows, tables, plots.

``write_run`` writes results.json/csv/md, predictions.csv and the figures. Every metric
in the tables is recomputed here from ``predictions.csv``'s columns, so a report can be
rebuilt without a model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import atomic, metrics, plots

PREDICTION_COLUMNS = ("variant", "file", "label", "prob_malignant")
TABLE_COLUMNS = ("variant", "accuracy", "auc", "sensitivity", "specificity", "n_test")


def metric_row(name: str, y: np.ndarray, p: np.ndarray, spec: dict) -> dict:
    """One flat results row: the variant, its spec, and every metric at argmax (p >= 0.5)."""
    scores = metrics.binary_metrics(y, p)
    row = {"variant": name, **{k: scores[k] for k in ("accuracy", "auc", "sensitivity",
                                                        "specificity")},
           "n_test": int(scores["n"])}
    row.update({k: v for k, v in scores.items() if k not in row and k != "n"})
    row.update(spec)
    return row


def rows_from_predictions(predictions: pd.DataFrame, specs: dict[str, dict]) -> list[dict]:
    """Results rows, in the order variants first appear in ``predictions``."""
    rows = []
    for name, group in predictions.groupby("variant", sort=False):
        rows.append(metric_row(name, group["label"].to_numpy(),
                               group["prob_malignant"].to_numpy(), specs.get(name, {})))
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The headline table (accuracy, AUC, sensitivity, specificity) plus each row's spec."""
    table = [[row.get(c) for c in TABLE_COLUMNS] + [row.get("spec", "")] for row in rows]
    return tabulate(table, headers=[*TABLE_COLUMNS, "spec"], tablefmt="github", floatfmt=".4f")


def write_predictions(path: Path, predictions: pd.DataFrame) -> None:
    """predictions.csv: variant,file,label,prob_malignant (full float precision)."""
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        predictions.loc[:, list(PREDICTION_COLUMNS)].to_csv(handle, index=False,
                                                            float_format="%.9g")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read predictions.csv back with the right dtypes."""
    return pd.read_csv(path, dtype={"variant": str, "file": str, "label": np.int64,
                                    "prob_malignant": np.float64}, keep_default_na=False)


def write_tables(out_dir: Path, rows: list[dict], provenance: dict) -> None:
    """results.json ({"rows", "provenance"}), results.csv and results.md."""
    atomic.write_json(out_dir / "results.json", {"rows": rows, "provenance": provenance})
    with atomic.atomic_open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as h:
        pd.DataFrame(rows).to_csv(h, index=False, float_format="%.6g")
    header = (f"# Results: {provenance.get('config', {}).get('name', '')}\n\n"
              f"Test split; metrics at argmax (malignant iff p >= 0.5); AUC is the exact "
              f"ROC AUC of the malignant column.\n\n")
    atomic.write_text(out_dir / "results.md", header + markdown_table(rows) + "\n")


def write_figures(out_dir: Path, predictions: pd.DataFrame,
                  histories: dict[str, dict]) -> list[Path]:
    """A confusion matrix per variant, one ROC with every variant, training curves."""
    written, curves = [], {}
    for name, group in predictions.groupby("variant", sort=False):
        y, p = group["label"].to_numpy(), group["prob_malignant"].to_numpy()
        curves[name] = (y, p)
        written.append(plots.confusion_matrix(
            y, p, f"{name} (test, n={len(y)})", out_dir / f"confusion_{plots.slug(name)}.png"))
    written.append(plots.roc_curves(curves, out_dir / "roc.png"))
    for name, history in histories.items():
        if history:
            written.append(plots.training_curves(
                history, name, out_dir / f"training_{plots.slug(name)}.png"))
    return written


def write_run(out_dir: Path, predictions: pd.DataFrame, specs: dict[str, dict],
              histories: dict[str, dict], provenance: dict) -> list[dict]:
    """Everything a run writes; returns the rows. Figures first, tables last, so the
    presence of results.json means the report is complete."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = rows_from_predictions(predictions, specs)
    write_predictions(out_dir / "predictions.csv", predictions)
    atomic.write_json(out_dir / "histories.json", histories)
    write_figures(out_dir, predictions, histories)
    write_tables(out_dir, rows, provenance)
    return rows
