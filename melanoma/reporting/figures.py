"""Figures from saved predictions and histories (matplotlib, no global pyplot state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from melanoma.evaluation.metric_table import is_finite
from melanoma.util import atomic

CLASS_LABELS = ("Benign", "Malignant")


def slug(name: str) -> str:
    """A file-name-safe version of a variant name, different for different names
    (percent-encoding: ``a/b`` -> ``a%2Fb``, ``a_b`` stays, ``+tta`` -> ``%2Btta``)."""
    from urllib.parse import quote

    return quote(name, safe="")  # always used after a prefix: confusion_<slug>.png


def save_figure(fig: Figure, path: Path) -> Path:
    """Save atomically (temp file + rename) at 120 dpi."""
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def confusion_matrix(y, p, title: str, path: Path, threshold: float = 0.5) -> Path:
    """Counts with row-normalised rates, predicted malignant iff p >= threshold."""
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    predicted = (np.asarray(p) >= threshold).astype(int)
    display = ConfusionMatrixDisplay.from_predictions(
        y, predicted, labels=[0, 1], display_labels=CLASS_LABELS, ax=ax, colorbar=False,
        cmap="Blues")
    counts = display.confusion_matrix
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{counts[i, j]}\n({rates[i, j]:.1%})")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def training_curves(history: dict[str, list[float]], title: str, path: Path) -> Path:
    """Loss, accuracy and AUC per epoch, training vs validation (as the original figures)."""
    fig = Figure(figsize=(11, 3.4))
    for i, (key, label) in enumerate((("loss", "loss"), ("accuracy", "accuracy"),
                                      ("auc", "AUC"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3,
                        label=("validation" if prefix else "training"))
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}  (training AUC: Keras 200-threshold; validation AUC: exact)",
                 fontsize=9)
    return save_figure(fig, path)


def reliability_diagram(y, p, title: str, path: Path, n_bins: int = 10) -> Path:
    """Observed malignant frequency vs mean predicted probability per bin, with bin counts."""
    from melanoma.evaluation import metrics

    curve = metrics.reliability_curve(y, p, n_bins)
    fig = Figure(figsize=(4.4, 4.6))
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="perfect")
    full = curve.counts > 0
    ax.plot(curve.mean_predicted[full], curve.observed_frequency[full], "-o", markersize=4,
            label=f"ECE {metrics.expected_calibration_error(y, p, n_bins):.3f}")
    ax.set_ylabel("observed malignant fraction")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    hist.bar(curve.bin_centers, curve.counts, width=1 / n_bins, color="tab:blue", alpha=0.5)
    hist.set_xlabel("predicted malignant probability")
    hist.set_ylabel("images")
    return save_figure(fig, path)


def _legend_auc(row: dict) -> str:
    low, high = row.get("auc_ci_low"), row.get("auc_ci_high")
    interval = f" [{low:.3f}, {high:.3f}]" if is_finite(low) and is_finite(high) else ""
    seeds = row.get("n_seeds") or 1
    mean = f" mean of {seeds} seeds" if seeds > 1 else ""
    return f"{row['variant']}: AUC{mean} {row['auc']:.3f}{interval}"


def _legend_below(ax) -> None:
    """The legend under the axes (long variant names never cover the curves)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False)


def _runs(value) -> list[tuple[np.ndarray, np.ndarray]]:
    """A variant's curves: one (labels, probabilities) pair, or a list of them (one a seed)."""
    return [value] if isinstance(value, tuple) else list(value)


def roc_with_intervals(curves: dict, rows: dict[str, dict], path: Path) -> Path:
    """ROC of every variant; the legend gives AUC with its 95% interval. A variant with
    several seeds (a list of (y, p) pairs) gets one thin curve per seed and their vertical
    mean (true positive rate averaged at each false positive rate)."""
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(5.8, 5.2))
    ax = fig.add_subplot()
    grid, k = np.linspace(0, 1, 201), 0
    for name, value in curves.items():
        runs = [(y, p) for y, p in _runs(value) if len(np.unique(y)) == 2]
        if not runs or not is_finite(rows[name].get("auc")):
            continue
        colour, k = f"C{k % 10}", k + 1
        if len(runs) == 1:
            fpr, tpr, _ = roc_curve(*runs[0])
            ax.plot(fpr, tpr, linewidth=1.4, color=colour, label=_legend_auc(rows[name]))
            continue
        mean = np.zeros_like(grid)
        for y, p in runs:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, linewidth=0.6, alpha=0.35, color=colour)
            mean += np.interp(grid, fpr, tpr) / len(runs)
        ax.plot(np.r_[0, grid], np.r_[0, mean], linewidth=1.8, color=colour,
                label=_legend_auc(rows[name]))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title("ROC, malignant class (test split; 95% bootstrap CI)", fontsize=9)
    _legend_below(ax)
    return save_figure(fig, path)


def precision_recall(curves: dict, rows: dict[str, dict], path: Path) -> Path:
    """Precision-recall of every variant (one thin curve per seed when there are several);
    the legend gives average precision (the mean over seeds)."""
    from sklearn.metrics import precision_recall_curve

    fig = Figure(figsize=(5.8, 5.2))
    ax = fig.add_subplot()
    prevalence, k = None, 0
    for name, value in curves.items():
        runs = [(y, p) for y, p in _runs(value) if np.sum(y) > 0]
        if not runs or not is_finite(rows[name].get("average_precision")):
            continue
        colour, k = f"C{k % 10}", k + 1
        for i, (y, p) in enumerate(runs):
            precision, recall, _ = precision_recall_curve(y, p)
            ax.step(recall, precision, where="post", color=colour,
                    linewidth=1.4 if len(runs) == 1 else 0.7, alpha=1 if len(runs) == 1 else 0.5,
                    label=(f"{rows[name]['variant']}: AP {rows[name]['average_precision']:.3f}"
                           if i == 0 else None))
            prevalence = float(np.mean(y))
    if prevalence is not None:
        ax.axhline(prevalence, linestyle=":", color="grey", linewidth=1, label="prevalence")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (positive predictive value)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall, malignant class (test split)", fontsize=9)
    _legend_below(ax)
    return save_figure(fig, path)


def forest_plot(rows: list[dict], path: Path, metric: str = "auc") -> Path:
    """Point estimate and 95% interval of ``metric`` per (variant, test set), one line each;
    degenerate models (their AUC is rounding noise) are left out."""
    shown = [r for r in rows if is_finite(r.get(metric)) and not r.get("degenerate")]
    fig = Figure(figsize=(6.5, 0.9 + 0.38 * max(len(shown), 1)))
    ax = fig.add_subplot()
    colours = {"full": "tab:blue", "clean": "tab:orange"}
    for i, row in enumerate(shown):
        y = len(shown) - 1 - i
        low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
        colour = colours.get(row.get("test_set"), "tab:gray")
        if is_finite(low) and is_finite(high):
            ax.plot([low, high], [y, y], color=colour, linewidth=2)
        ax.plot([row[metric]], [y], "o", color=colour)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"{r['variant']} ({r.get('test_set', 'full')}, n={r.get('n_test')})"
                        for r in reversed(shown)], fontsize=9)
    ax.set_xlabel(f"{metric.upper() if metric == 'auc' else metric} with 95% bootstrap interval")
    ax.set_title(f"Forest plot: {metric} per variant and test set", fontsize=10)
    ax.grid(axis="x", linestyle=":", linewidth=0.6)
    return save_figure(fig, path)


def published_vs_reproduced(published: list[dict], path: Path) -> Path:
    """One line per (variant, metric): the reproduced mean with its 95% interval and the
    published value (x; red when it lies outside the interval)."""
    fig = Figure(figsize=(6.5, 0.9 + 0.38 * max(len(published), 1)))
    ax = fig.add_subplot()
    for i, item in enumerate(published):
        y = len(published) - 1 - i
        low, high = item.get("ci_low"), item.get("ci_high")
        if is_finite(low) and is_finite(high):
            ax.plot([low, high], [y, y], color="tab:blue", linewidth=2)
        if is_finite(item.get("reproduced")):
            ax.plot([item["reproduced"]], [y], "o", color="tab:blue")
        ax.plot([item["published"]], [y], "x", markersize=8, mew=2,
                color="tab:red" if item.get("inside") is False else "black")
    ax.set_yticks(range(len(published)))
    ax.set_yticklabels([f"{p['variant']} {p['metric']} ({p.get('n_seeds', 1)} seed(s))"
                        for p in reversed(published)], fontsize=9)
    ax.set_xlabel("value (o: reproduced mean with 95% interval; x: published)")
    ax.set_title("Published vs reproduced", fontsize=9)
    ax.grid(axis="x", linestyle=":", linewidth=0.6)
    return save_figure(fig, path)
