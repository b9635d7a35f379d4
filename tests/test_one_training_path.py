"""One training path: ``run`` and every ``tune`` trial train through
``melanoma.models.training.train_job``, so a head tuned under one loss and sampling is used
under the same ones. Checked where Keras is reached: the class weights ``Model.fit`` gets and
the number of training batches per epoch (balanced sampling oversamples the minority)."""
from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import melanoma
from melanoma.models import factory

ROOT = Path(__file__).resolve().parents[1]


def _tiny_classifier(backbone="B0", image_size=None, weights="none", head_units=8,
                     dropout=0.0, freeze_backbone=False, bn_momentum=None):
    """A few-layer stand-in for EfficientNet with the same input and softmax head."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="head_dense")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32",
                                                  name="head_softmax")(x))


def _imbalanced_data(root: Path) -> Path:
    """train: 24 benign, 8 malignant; test: 4 + 4 (random 40 px RGB JPEGs)."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", (24, 8)), ("test", (4, 4))):
        for name, n in zip(("Benign", "Malignant"), counts):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name[0]}{i}.jpg")
    return root


def _config(class_weight: str, balanced: bool) -> dict:
    return {"name": "path", "seed": 1, "data": {"val_fraction": 0.25},
            "evaluation": {"bootstrap_resamples": 20, "audit": False},
            "report": {"gallery_cases": 0}, "tensorboard": False,
            "defaults": {"backbone": "B0", "image_size": 32, "weights": "none", "epochs": 1,
                         "batch_size": 4, "val_batch_size": 8, "head_units": 8,
                         "class_weight": class_weight, "balanced_sampling": balanced,
                         "jit_compile": False},
            "variants": [{"name": "v", "preprocessing": "samplewise"}],
            "tune": {"max_trials": 1, "epochs": 1, "jit_compile": False}}


@pytest.fixture
def fits(monkeypatch):
    """Every Keras ``Model.fit`` call: (class weights, training batches in its first epoch)."""
    seen = []
    original = keras.Model.fit

    class CountBatches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.first = self.batches

    def spy(self, *args, class_weight=None, callbacks=(), **kwargs):
        counter = CountBatches()
        history = original(self, *args, class_weight=class_weight,
                           callbacks=[*callbacks, counter], **kwargs)
        seen.append((class_weight, counter.first, self.loss))
        return history

    monkeypatch.setattr(keras.Model, "fit", spy)
    monkeypatch.setattr(factory, "build_classifier", _tiny_classifier)
    return seen


def test_a_tuned_trial_trains_under_the_same_loss_and_sampling_as_run(tmp_path, fits):
    data = _imbalanced_data(tmp_path / "data")
    cfg = _config("balanced", True)
    melanoma.run_benchmark(cfg, data_dir=data, out_dir=tmp_path / "run",
                           models_dir=tmp_path / "models")
    melanoma.tune_head(cfg, data_dir=data, out_dir=tmp_path / "tune")
    assert len(fits) == 2, fits  # one training by run, one trial by tune
    run, trial = fits
    assert run == trial  # same class weights, batches per epoch and loss
    # 32 train images -> 24 after the 25% validation split: 18 benign, 6 malignant;
    # "balanced" weights n / (2 n_class); balanced sampling: 18 + 18 rows = 9 batches of 4
    # (unweighted and unbalanced it would be None and 6 batches)
    assert run[0] == pytest.approx({0: 24 / 36, 1: 24 / 12})
    assert run[1] == 36 // 4
    assert run[2] == "categorical_crossentropy"


def test_keras_fit_is_called_in_one_module_only():
    """``grep`` for Keras ``.fit(`` calls in the library: models/training.py alone."""
    calls = {}
    for path in (ROOT / "melanoma").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#")[0]
            if re.search(r"\b(model|network|classifier|net)\.fit\(", code):
                calls.setdefault(str(path.relative_to(ROOT)), []).append(line.strip())
    assert list(calls) == ["melanoma/models/training.py"], calls
