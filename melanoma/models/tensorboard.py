"""TensorBoard scalars of every epoch per (variant, seed) (MLflow: melanoma.runs.tracking).

    tensorboard --logdir reports/default/tensorboard

Layout: ``<log_dir>/<variant>/seed-<seed>[/fold-<f>]/{train,validation}/events.out.tfevents.*``
(``fold-<f>``: the fold models of k-fold cross-validation) with the
tags ``epoch/loss``, ``epoch/accuracy`` and ``epoch/auc`` in both runs, so TensorBoard draws
training and validation on one chart; step = epoch number, 1-based as in training_*.png.
Validation AUC is the exact malignant-class ROC AUC (training.ValidationMetrics); training
AUC is Keras' 200-threshold approximation over the training batches.
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras

from melanoma.util.names import check_safe_name

log = logging.getLogger(__name__)

# history key -> (run, tag, description)
SERIES = {
    "loss": ("train", "epoch/loss", "categorical cross-entropy, training batches"),
    "accuracy": ("train", "epoch/accuracy", "accuracy at argmax, training batches"),
    "auc": ("train", "epoch/auc", "Keras AUC (200 thresholds, approximate), training batches"),
    "val_loss": ("validation", "epoch/loss", "cross-entropy on the validation split"),
    "val_accuracy": ("validation", "epoch/accuracy", "accuracy at argmax, validation split"),
    "val_auc": ("validation", "epoch/auc", "exact malignant-class ROC AUC, validation split"),
}


def run_dir(log_dir: str | Path, variant: str, seed: int, fold: int = 0) -> Path:
    """``<log_dir>/<variant>/seed-<seed>``: one TensorBoard run group per (variant, seed);
    ``.../fold-<f>`` for fold ``f`` of cross-validation."""
    folder = Path(log_dir) / check_safe_name(variant, "variant name") / f"seed-{int(seed)}"
    return folder / f"fold-{int(fold)}" if fold else folder


class _Writers:
    """One event-file writer per run (train, validation), created on first use: the
    ``tensorboard`` package's own NumPy-only writer (the same scalar summaries as
    ``tf.summary.scalar``), so TensorBoard logs need no TensorFlow, on any backend."""

    def __init__(self, folder: Path):
        self.folder, self.writers = Path(folder), {}

    def scalars(self, values: dict, step: int) -> None:
        from tensorboard.summary import Writer

        for key, value in values.items():
            if key not in SERIES or value is None:
                continue
            run, tag, description = SERIES[key]
            if run not in self.writers:
                (self.folder / run).mkdir(parents=True, exist_ok=True)
                self.writers[run] = Writer(str(self.folder / run))
            self.writers[run].add_scalar(tag, float(value), step=step, description=description)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.flush()
            writer.close()


def write_history(log_dir: str | Path, variant: str, seed: int,
                  history: dict[str, list[float]], fold: int = 0) -> Path:
    """Write every epoch of a saved history (``histories.json``'s entry) as scalars, replacing
    the event files of an earlier write of this (variant, seed, fold). Returns the run folder."""
    folder = run_dir(log_dir, variant, seed, fold)
    for old in folder.glob("*/events.out.tfevents.*"):
        old.unlink()
    writers = _Writers(folder)
    try:
        epochs = max((len(v) for k, v in history.items() if k in SERIES), default=0)
        for epoch in range(epochs):
            writers.scalars({k: v[epoch] for k, v in history.items()
                             if k in SERIES and epoch < len(v)}, step=epoch + 1)
    finally:
        writers.close()
    log.debug("TensorBoard: %d epoch(s) of %s seed %s in %s", epochs, variant, seed, folder)
    return folder


class TensorBoardScalars(keras.callbacks.Callback):
    """Live version for ``training.fit(extra_callbacks=...)``: the epoch's logs (after
    ValidationMetrics has added the exact val_* values) as scalars, flushed every epoch."""

    def __init__(self, log_dir: str | Path, variant: str, seed: int):
        super().__init__()
        self.writers = _Writers(run_dir(log_dir, variant, seed))

    def on_epoch_end(self, epoch, logs=None):
        self.writers.scalars(dict(logs or {}), step=epoch + 1)
        for writer in self.writers.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        self.writers.close()
        self.writers.writers = {}
