"""Training one variant: Adam + categorical cross-entropy, exact validation metrics per epoch.

Validation accuracy and AUC are computed from predicted probabilities after every epoch
(exact malignant-class AUC, not Keras' 200-threshold AUC), so the training curves use the
same definitions as the final table.
"""
from __future__ import annotations

import sys
import time

import keras
import numpy as np

from . import metrics


class ValidationMetrics(keras.callbacks.Callback):
    """After each epoch, predict the validation split and log exact loss, accuracy and AUC."""

    def __init__(self, val_data, val_labels):
        super().__init__()
        self.val_data, self.val_labels = val_data, np.asarray(val_labels)

    def on_epoch_end(self, epoch, logs=None):
        p = np.clip(self.model.predict(self.val_data, verbose=0)[:, 1].astype(np.float64), 0, 1)
        y, eps = self.val_labels, 1e-7
        loss = -np.mean(y * np.log(np.clip(p, eps, 1)) + (1 - y) * np.log(np.clip(1 - p, eps, 1)))
        scores = metrics.binary_metrics(y, p)
        if logs is not None:
            logs.update(val_loss=float(loss), val_accuracy=scores["accuracy"], val_auc=scores["auc"])


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch on stderr, with the variant's name: progress for long runs."""

    KEYS = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs, self.started = label, epochs, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        shown = "  ".join(f"{k}={logs[k]:.4f}" for k in self.KEYS if k in (logs or {}))
        seconds = time.perf_counter() - self.started
        print(f"  {self.label} epoch {epoch + 1}/{self.epochs}  {shown}  ({seconds:.1f} s)",
              file=sys.stderr, flush=True)


def compile_classifier(model, learning_rate: float, jit_compile="auto"):
    """Adam, categorical cross-entropy, accuracy and the malignant-column AUC (approximate,
    training batches only; validation AUC is exact via ValidationMetrics)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)],
        jit_compile=jit_compile,
    )
    return model


def fit(model, train_data, val_data, val_labels, epochs: int, label: str = "",
        extra_callbacks=()) -> dict[str, list[float]]:
    """Train ``epochs`` epochs; return the per-epoch history (loss, accuracy, auc, val_*)."""
    callbacks = [ValidationMetrics(val_data, val_labels), EpochPrinter(label, epochs),
                 *extra_callbacks]
    history = model.fit(train_data, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


class ModelPool:
    """One compiled model per architecture, reset to its initial state for each variant.

    Tracing EfficientNet's training step costs ~25 s of Python per new model on 2 CPU
    cores, far more than a small epoch. Variants that differ only in data, preprocessing,
    learning rate or epochs share the model: every variable (weights, BatchNorm
    statistics, dropout seed states) is restored to its snapshot taken right after the
    seeded build, and the optimizer's slots are zeroed, which is exactly the state of a
    fresh build with the same seed, so results do not depend on variant order.
    """

    def __init__(self):
        self._entries: dict[str, tuple] = {}

    def get(self, architecture_key: str, build, learning_rate: float):
        """The model for ``architecture_key`` (built by ``build()`` once), reset and set to
        ``learning_rate``."""
        entry = self._entries.get(architecture_key)
        if entry is None:
            model = compile_classifier(build(), learning_rate)
            self._entries[architecture_key] = (model, [v.numpy() for v in model.variables])
            return model
        model, snapshot = entry
        for variable, value in zip(model.variables, snapshot):
            variable.assign(value)
        for variable in model.optimizer.variables:
            variable.assign(np.zeros(variable.shape, variable.dtype))
        model.optimizer.learning_rate.assign(learning_rate)
        return model
