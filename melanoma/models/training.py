"""Training one variant: Adam + categorical cross-entropy, exact validation metrics per epoch.

Validation accuracy and AUC are computed from predicted probabilities after every epoch
(exact malignant-class AUC, not Keras' 200-threshold AUC), so the training curves use the
same definitions as the final table.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from melanoma.evaluation import metrics
from melanoma.models.epochs import KEEP_EPOCH, fall_warning, kept_epoch  # noqa: F401
from melanoma.models.storage import CHECKPOINT_FILE
from melanoma.util import atomic
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)


def diverged(label: str, epoch: int, what: str) -> UserError:
    """The one-line error of a training run that produced NaN or infinite numbers."""
    return UserError(f"{label}: training diverged in epoch {epoch + 1} ({what}); lower "
                     f"learning_rate or check the data and preprocessing; no model was saved")


class DivergenceGuard(keras.callbacks.Callback):
    """Stop at the end of the first epoch whose training loss is NaN or infinite, before
    that epoch is checkpointed: a diverged model is never saved nor reported."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise diverged(self.label, epoch, f"loss {float(loss)}")


class ValidationMetrics(keras.callbacks.Callback):
    """After each epoch, predict the validation split and log exact loss, accuracy and AUC."""

    def __init__(self, val_data, val_labels, label: str = ""):
        super().__init__()
        self.val_data, self.val_labels, self.label = val_data, np.asarray(val_labels), label

    def on_epoch_end(self, epoch, logs=None):
        # a padded last batch (CacheBatches.pad_remainder) is cut to the labelled rows
        raw = self.model.predict(self.val_data, verbose=0)[:len(self.val_labels), 1].astype(np.float64)
        if not np.all(np.isfinite(raw)):
            raise diverged(self.label, epoch, "validation probabilities are NaN")
        p = np.clip(raw, 0, 1)
        y, eps = self.val_labels, 1e-7
        loss = -np.mean(y * np.log(np.clip(p, eps, 1)) + (1 - y) * np.log(np.clip(1 - p, eps, 1)))
        scores = metrics.binary_metrics(y, p)
        if logs is not None:
            logs.update(val_loss=float(loss), val_accuracy=scores["accuracy"], val_auc=scores["auc"])


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch on stderr, with the variant's name: progress for long runs."""

    KEYS = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")

    def __init__(self, label: str, epochs: int, level: int = logging.INFO):
        super().__init__()
        self.label, self.epochs, self.started, self.level = label, epochs, 0.0, level

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        shown = "  ".join(f"{k}={logs[k]:.4f}" for k in self.KEYS if k in (logs or {}))
        seconds = time.perf_counter() - self.started
        log.log(self.level, "  %s epoch %d/%d  %s  (%.1f s)", self.label, epoch + 1,
                self.epochs, shown, seconds)


class KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation AUC (the first of equals) and
    puts them back at the end of training (``keep_epoch = "best"``). With a checkpoint
    folder they are saved there too (``best.npz``), so a resumed training keeps them."""

    FILE = "best.npz"

    def __init__(self, folder: Path | None = None, before: dict | None = None):
        super().__init__()
        self.folder, self.best, self.weights = folder, -np.inf, None
        earlier = [v for v in (before or {}).get("val_auc", []) if v is not None]
        if earlier and folder is not None and (Path(folder) / self.FILE).is_file():
            with np.load(Path(folder) / self.FILE, allow_pickle=False) as saved:
                self.best = float(saved["val_auc"])
                self.weights = [saved[f"v{i}"] for i in range(len(saved.files) - 1)]

    def on_epoch_end(self, epoch, logs=None):
        auc = (logs or {}).get("val_auc")
        if auc is None or not math.isfinite(float(auc)) or float(auc) <= self.best:
            return
        self.best, self.weights = float(auc), [v.numpy() for v in self.model.variables]
        if self.folder is not None:
            with atomic.atomic_open(Path(self.folder) / self.FILE, "wb") as handle:
                np.savez(handle, val_auc=np.asarray(self.best),
                         **{f"v{i}": w for i, w in enumerate(self.weights)})

    def on_train_end(self, logs=None):
        if self.weights is not None:
            for variable, value in zip(self.model.variables, self.weights):
                variable.assign(value)


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




class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch, save every model and optimizer variable and the history so far in
    one atomically written ``folder/state.npz``. Unlike ``BackupAndRestore`` this includes
    the dropout seed-generator states, so a resumed run continues bit for bit; and it
    restores into a pooled (already built and compiled) model by assignment."""

    def __init__(self, folder: Path, history: dict[str, list[float]]):
        super().__init__()
        self.folder, self.history = Path(folder), {k: list(v) for k, v in history.items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        arrays = {f"model_{i}": v.numpy() for i, v in enumerate(self.model.variables)}
        arrays.update({f"optimizer_{i}": v.numpy()
                       for i, v in enumerate(self.model.optimizer.variables)})
        arrays["epoch"] = np.asarray(epoch + 1)
        arrays["history"] = np.asarray(json.dumps(self.history))
        with atomic.atomic_open(self.folder / CHECKPOINT_FILE, "wb") as handle:
            np.savez(handle, **arrays)


def restore_checkpoint(model, folder: Path) -> tuple[int, dict[str, list[float]]]:
    """Assign a saved epoch state to ``model``; returns (epochs done, history so far), or
    (0, {}) when ``folder`` holds no checkpoint."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return 0, {}
    if not model.optimizer.built:  # a fresh model's optimizer has no slots until built
        model.optimizer.build(model.trainable_variables)
    with np.load(path, allow_pickle=False) as state:
        for prefix, variables in (("model", model.variables),
                                  ("optimizer", model.optimizer.variables)):
            saved = sorted(k for k in state.files if k.startswith(prefix + "_"))
            if len(saved) != len(variables):
                raise UserError(f"{path}: a training state of another model ({len(saved)} "
                                f"saved {prefix} variables, this one has {len(variables)}: "
                                f"an older version's?); delete that "
                                f"folder or rerun with --retrain")
            for i, variable in enumerate(variables):
                variable.assign(state[f"{prefix}_{i}"])
        return int(state["epoch"]), json.loads(str(state["history"]))


def class_weights(setting, labels) -> dict[int, float] | None:
    """Keras' ``class_weight`` for a config's ``class_weight``: None for "none"; for
    "balanced" n / (2 n_class) of ``labels`` (scikit-learn's rule); for a table
    {benign: w0, malignant: w1} -> {0: w0, 1: w1}."""
    if setting == "none":
        return None
    if setting == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        w = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.asarray(labels))
        return {0: float(w[0]), 1: float(w[1])}
    return {0: float(setting["benign"]), 1: float(setting["malignant"])}


def fit(model, train_data, val_data, val_labels, epochs: int, label: str = "",
        extra_callbacks=(), checkpoint_dir: Path | None = None,
        class_weight: dict[int, float] | None = None, initial_epoch: int = 0,
        keep_epoch: str = "last", epoch_level: int = logging.INFO) -> dict[str, list[float]]:
    """Keras' fit with the project's callbacks; the one ``model.fit`` call of the project.
    ``train_data``: a repeating :class:`melanoma.data.loader.CacheBatches`; ``val_data``:
    batches the model predicts (uint8 for a model with an input layer).
    With ``checkpoint_dir``, each epoch is saved there and a saved one is resumed from;
    ``class_weight`` ({0: w0, 1: w1}) weights each training image's loss by its class.
    ``keep_epoch``: the model ends with the last epoch's weights, or ("best") those of the
    epoch with the best validation AUC (``kept_epoch`` says which from the history); a fall
    of the validation AUC by >= FALL_WARNING from its best is one warning line either way."""
    if keep_epoch not in KEEP_EPOCH:
        raise ValueError(f"keep_epoch must be one of {KEEP_EPOCH}, got {keep_epoch!r}")
    done, before = restore_checkpoint(model, checkpoint_dir) if checkpoint_dir else (0, {})
    done = max(done, initial_epoch)
    # the guard first: a diverged epoch is neither scored, checkpointed nor printed as done
    callbacks = [DivergenceGuard(label), ValidationMetrics(val_data, val_labels, label)]
    if keep_epoch == "best":  # after the validation metrics, before the checkpoint
        callbacks.append(KeepBest(checkpoint_dir, before))
    if checkpoint_dir:  # saved before the epoch's line is printed: a printed epoch is safe
        callbacks.append(EpochCheckpoint(checkpoint_dir, before))
    callbacks += [EpochPrinter(label, epochs, epoch_level), *extra_callbacks]
    if done and checkpoint_dir:
        log.info("  %s resuming after epoch %d/%d from %s", label, done, epochs, checkpoint_dir)
    train_data.start_at(done)  # each epoch's order is a function of (seed, epoch) alone
    history = model.fit(train_data, epochs=epochs, initial_epoch=done, callbacks=callbacks,
                        steps_per_epoch=train_data.batches_per_epoch, verbose=0, shuffle=False,
                        class_weight=class_weight)
    new = {k: [float(v) for v in values] for k, values in history.history.items()}
    merged = {k: before.get(k, []) + new.get(k, []) for k in {**before, **new}}
    warning = fall_warning(merged, keep_epoch, label)
    if warning:
        log.warning(warning)
    return merged


def build_model(variant, seed: int, preprocessing=None):
    """A fresh, uncompiled model of ``variant`` seeded with ``seed``: uint8 batches in, the
    warp (training only) and the preprocessing in its input layer
    (models/image_input.py), then the network."""
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models import image_input
    from melanoma.models.factory import build_classifier

    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy("mixed_float16" if variant.mixed_precision else "float32")
    try:
        network = build_classifier(variant.backbone, variant.resolved_image_size(),
                                   variant.weights, variant.head_units, variant.dropout,
                                   variant.freeze_backbone, variant.bn_momentum)
    finally:
        keras.config.set_dtype_policy("float32")
    return image_input.with_image_input(network, variant.augmentation,
                                        preprocessing or get_preprocessing("native"), seed)


def pool_key(variant) -> str:
    """What fixes a pooled model's architecture: seeds and preprocessing variants share it
    (see ModelPool; the preprocessing is set by ``image_input.configure``)."""
    from melanoma.models import image_input

    return variant.architecture_key(None) + image_input.pool_key(variant.augmentation)


def train_job(model, variant, splits, preprocessing, seed: int, label: str = "", *,
              checkpoint_dir: Path | None = None, extra_callbacks=(), epochs: int | None = None,
              initial_epoch: int = 0, epoch_level: int = logging.INFO) -> dict[str, list[float]]:
    """THE training of one (variant, seed) job, for ``run``, ``bench``, cross-validation and
    every ``tune`` trial: ``model`` (compiled; from :func:`build_model`) is set to the
    variant's augmentation and preprocessing and trained on uint8 batches of
    ``splits.train`` (melanoma/data/loader.py) with the variant's class weights and balanced
    sampling, validated exactly on ``splits.val`` each epoch, stopped on divergence,
    checkpointed per epoch into ``checkpoint_dir`` (and resumed from it), the kept epoch
    chosen by ``keep_epoch``. Returns the per-epoch history."""
    from melanoma.data.loader import CacheBatches
    from melanoma.models import image_input

    image_input.configure(model, variant.augmentation, preprocessing)
    train, val = splits.train, splits.val
    train_data = CacheBatches(train.cache, train.index, train.labels, variant.batch_size,
                              shuffle=True, seed=seed, balanced=variant.balanced_sampling,
                              repeat=True)
    val_data = CacheBatches(val.cache, val.index, None, variant.val_batch_size, pad_remainder=True)
    weights = class_weights(variant.class_weight, train.labels)
    if weights or variant.balanced_sampling:
        log.info("%s: class weights %s; balanced sampling %s", label,
                 weights or "none", "on" if variant.balanced_sampling else "off")
    try:
        return fit(model, train_data, val_data, val.labels, epochs or variant.epochs, label,
                   extra_callbacks, checkpoint_dir, weights, initial_epoch, variant.keep_epoch,
                   epoch_level)
    finally:
        train_data.close()


class ModelPool:
    """One compiled model per architecture, reset to a seed's initial state for each variant.

    Tracing EfficientNet's training step costs ~25 s of Python per new model on 2 CPU
    cores, far more than a small epoch. Variants and seeds that differ only in data,
    preprocessing, learning rate, epochs or initial weights share the model: every variable
    (weights, BatchNorm statistics, dropout seed states) is set to the values of a fresh
    seeded build (``build()``, not compiled nor traced: ~1 s for B0), kept as the snapshot of
    the current ``init_key`` (the training seed), and the optimizer's slots are zeroed. That
    is exactly the state of a fresh build with the same seed, so results do not depend on
    variant or seed order, nor on whether the model was shared (tests/test_training.py).
    """

    def __init__(self):
        self._entries: dict[str, list] = {}  # key -> [model, init_key, snapshot]

    def get(self, architecture_key: str, build, learning_rate: float, jit_compile="auto",
            init_key=None):
        """The model for ``architecture_key`` (built and compiled once), set to the initial
        state ``build()`` gives for ``init_key`` and to ``learning_rate``; ``jit_compile``
        (XLA) is part of the architecture key."""
        entry = self._entries.get(architecture_key)
        if entry is None:
            model = compile_classifier(build(), learning_rate, jit_compile)
            self._entries[architecture_key] = [model, init_key,
                                               [v.numpy() for v in model.variables]]
            return model
        model = entry[0]
        if entry[1] != init_key:  # another seed: a fresh build's values, one seed kept
            fresh = [v.numpy() for v in build().variables]
            if [a.shape for a in fresh] != [tuple(v.shape) for v in model.variables]:
                raise ValueError(f"pool key {architecture_key!r}: builds differ in variables")
            entry[1:] = [init_key, fresh]
        for variable, value in zip(model.variables, entry[2]):
            variable.assign(value)
        for variable in model.optimizer.variables:
            variable.assign(np.zeros(variable.shape, variable.dtype))
        model.optimizer.learning_rate.assign(learning_rate)
        return model
