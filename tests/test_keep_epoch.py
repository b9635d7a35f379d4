"""keep_epoch: the last epoch's weights or those of the best validation AUC, chosen in the one
training function (models/training.fit), recorded from the history, kept across a resume,
and a large fall of the validation AUC is one warning line either way. A two-weight model on
four features: seconds, no EfficientNet."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

from melanoma import config
from melanoma.models import epochs, training
from melanoma.util.errors import UserError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = (X[:, 0] + RNG.normal(0, 2.0, 64) > 0).astype(int)  # noisy: validation AUC wanders
XV = RNG.normal(size=(32, 4)).astype("float32")
YV = (XV[:, 0] + RNG.normal(0, 2.0, 32) > 0).astype(int)


def _data():
    from melanoma.data.loader import array_batches  # the loader, over arrays in memory

    return array_batches(X, Y, 16, repeat=True), array_batches(XV, None, 32)


def _model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    return training.compile_classifier(model, 0.3)  # large steps: the AUC goes up and down


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.weights])


def _fit(keep, n=8, folder=None, model=None):
    model, record = model or _model(), Record()
    train, val = _data()
    history = training.fit(model, train, val, YV, n, "job", extra_callbacks=(record,),
                           checkpoint_dir=folder, keep_epoch=keep)
    return model, history, record


def test_kept_epoch_and_the_fall_warning_from_the_history():
    history = {"loss": [1, 1, 1, 1], "val_auc": [0.6, 0.84, 0.84, 0.59]}
    assert epochs.kept_epoch(history, "last") == 4 and epochs.kept_epoch(history, "best") == 2
    assert epochs.kept_epoch({"loss": [1, 1], "val_auc": [None, None]}, "best") == 2
    line = epochs.fall_warning(history, "last", "v")
    assert line.startswith("v: validation AUC fell from 0.840 (epoch 2) to 0.590 (epoch 4); "
                           "keeping epoch 4") and '"best" keeps the best epoch' in line
    assert "keeping epoch 2" in epochs.fall_warning(history, "best", "v")
    assert epochs.fall_warning({"val_auc": [0.8, 0.77]}, "last") == ""


def test_best_keeps_the_best_epochs_weights_and_last_the_last(caplog):
    with caplog.at_level(logging.WARNING):
        best_model, history, record = _fit("best")
    lines = [r.message for r in caplog.records if "validation AUC fell" in r.message]
    kept = epochs.kept_epoch(history, "best")
    assert kept != len(history["val_auc"]), "the fixture must have a best epoch before the last"
    for now, then in zip(best_model.weights, record.weights[kept - 1]):
        np.testing.assert_array_equal(now.numpy(), then)
    last_model, _, last_record = _fit("last")
    for now, then in zip(last_model.weights, last_record.weights[-1]):
        np.testing.assert_array_equal(now.numpy(), then)
    fell = max(history["val_auc"]) - history["val_auc"][-1] >= epochs.FALL_WARNING
    assert len(lines) == int(fell) and all(f"keeping epoch {kept}" in x for x in lines)


def test_a_resumed_training_keeps_the_best_of_the_epochs_before_the_stop(tmp_path):
    whole, history, _ = _fit("best", 8)
    kept = epochs.kept_epoch(history, "best")
    stop = kept + 1  # stopped after the best epoch: its weights come back from best.npz
    _fit("best", stop, tmp_path)
    resumed, history_2, _ = _fit("best", 8, tmp_path)
    assert history_2["val_auc"] == pytest.approx(history["val_auc"])
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keep_epoch_is_a_checked_config_key_that_enters_the_model_key():
    last, best = (config.VariantConfig(name="v", keep_epoch=k) for k in ("last", "best"))
    assert last.model_key("d", 1, 0.15, "nearest") == config.VariantConfig(name="v").model_key(
        "d", 1, 0.15, "nearest")  # the default leaves older models' keys as they were
    assert best.model_key("d", 1, 0.15, "nearest") != last.model_key("d", 1, 0.15, "nearest")
    with pytest.raises(UserError, match='keep_epoch.*must be "last" or "best"'):
        config.from_dict({"variants": [{"name": "v", "keep_epoch": "first"}]})
