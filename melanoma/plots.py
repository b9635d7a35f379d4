"""Figures from saved predictions and histories (matplotlib, no global pyplot state)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from . import atomic

CLASS_LABELS = ("Benign", "Malignant")


def slug(name: str) -> str:
    """A file-name-safe version of a variant name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "variant"


def save_figure(fig: Figure, path: Path) -> Path:
    """Save atomically (temp file + rename) at 120 dpi."""
    tmp = atomic.tmp_path_for(path)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """One ROC plot with every variant (name -> (labels, malignant probabilities))."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for name, (y, p) in curves.items():
        if len(np.unique(y)) == 2:
            RocCurveDisplay.from_predictions(y, p, name=name, ax=ax, plot_chance_level=False)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title("ROC, malignant class (test split)")
    ax.legend(fontsize=7, loc="lower right")
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
