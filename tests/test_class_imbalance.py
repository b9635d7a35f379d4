"""Class imbalance in training: the class_weight and balanced_sampling config keys, the
weights Keras gets, the weighted loss, and the balanced epoch of the cached-image stream."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from melanoma import config
from melanoma.models import training
from melanoma.util.errors import UserError

BASE = config.VariantConfig(name="a", preprocessing="samplewise", backbone="B0", image_size=32,
                            weights="none", epochs=2, learning_rate=1e-4, bn_momentum=None)
# BASE's keys before class_weight/balanced_sampling existed (computed with the code of
# commit 2048467): at their defaults the new keys leave every cached model's key unchanged.
KEY_BEFORE, CONTINUATION_BEFORE = "e56020022307921a", "bf8a1a1ae4305a72"


def key(v):
    return v.model_key("data1", 1, 0.15, "nearest")


def test_defaults_keep_existing_model_keys():
    assert (BASE.class_weight, BASE.balanced_sampling) == ("none", False)
    assert key(BASE) == KEY_BEFORE
    assert BASE.continuation_key("data1", 1, 0.15, "nearest") == CONTINUATION_BEFORE
    v = config.load("default").variants[0]
    assert (v.class_weight, v.balanced_sampling) == ("none", False)


def test_each_setting_gets_its_own_model_key():
    keys = [key(dataclasses.replace(BASE, **change)) for change in (
        {}, {"class_weight": "balanced"}, {"class_weight": {"benign": 1.0, "malignant": 4.0}},
        {"class_weight": {"benign": 1.0, "malignant": 5.0}}, {"balanced_sampling": True},
        {"class_weight": "balanced", "balanced_sampling": True})]
    assert len(set(keys)) == len(keys)
    # architecture unchanged: the pooled model is shared
    assert BASE.architecture_key(1) == dataclasses.replace(BASE, class_weight="balanced").architecture_key(1)


def test_config_values_and_one_line_errors():
    cfg = config.load("default", ["defaults.class_weight=\"balanced\"", "defaults.balanced_sampling=true"])
    assert all(v.class_weight == "balanced" and v.balanced_sampling for v in cfg.variants)
    table = config.load("default", ["defaults.class_weight={benign = 1, malignant = 4}"]).variants[0]
    floats = config.load("default", ["defaults.class_weight={benign = 1.0, malignant = 4.0}"]).variants[0]
    assert table.class_weight == {"benign": 1.0, "malignant": 4.0} and key(table) == key(floats)
    for bad in ("\"balance\"", "{benign = 1}", "{benign = 1, malignant = 0}",
                "{benign = 1, malignant = true}", "{benign = 1, malignant = 2, other = 3}", "2"):
        with pytest.raises(UserError, match="class_weight must be \"none\", \"balanced\" or a table"):
            config.load("default", [f"defaults.class_weight={bad}"])
    with pytest.raises(UserError, match="balanced_sampling must be bool"):
        config.load("default", ["defaults.balanced_sampling=1"])


def test_class_weights_for_keras():
    labels = np.array([0] * 30 + [1] * 6)
    assert training.class_weights("none", labels) is None
    w = training.class_weights("balanced", labels)
    assert w == pytest.approx({0: 36 / (2 * 30), 1: 36 / (2 * 6)})
    # balanced weights make both classes weigh the same in total
    assert w[0] * 30 == pytest.approx(w[1] * 6)
    assert training.class_weights({"benign": 1.0, "malignant": 4.0}, labels) == {0: 1.0, 1: 4.0}


def test_fit_weights_each_images_loss_by_its_class():
    """With learning rate 0 nothing changes during the epoch, so the reported loss of one
    full batch is sum_i w(y_i) * CE_i / n, computed here by hand from the model's outputs."""
    import keras

    from melanoma.data.loader import array_batches

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4, 4, 3)).astype(np.float32)
    y = np.array([0] * 9 + [1] * 3)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    training.compile_classifier(model, 0.0, jit_compile=False)
    data = array_batches(x, y, 12, repeat=True)  # any array behind the cache's row interface
    p = np.asarray(model(x))[np.arange(12), y].astype(np.float64)
    ce = -np.log(p)
    for weights in (None, {0: 1.0, 1: 1.0}, {0: 0.5, 1: 7.0}):
        history = training.fit(model, data, x, y, 1, class_weight=weights)
        w = np.ones(12) if weights is None else np.array([weights[v] for v in y])
        assert history["loss"][0] == pytest.approx(float(np.sum(w * ce) / 12), rel=1e-5)


def test_streamed_balanced_epoch_from_the_cache(tmp_path):
    """CacheBatches(balanced=True): batches of cached pixels whose one-hot labels are the
    images' own, half of each class per epoch (the row logic: tests/test_loader.py)."""
    from PIL import Image

    from melanoma.data import cache as cache_mod
    from melanoma.data.loader import CacheBatches

    rng = np.random.default_rng(2)
    labels = np.array([0] * 9 + [1] * 3)
    files = []
    for k, label in enumerate(labels):  # each image's colour encodes its label
        img = np.full((16, 16, 3), 200 if label else 20, np.uint8) + rng.integers(0, 10, (16, 16, 3), dtype=np.uint8)
        files.append(tmp_path / f"{k}.png")
        Image.fromarray(img).save(files[-1])
    built = cache_mod.open_or_build(files, labels, 16, "nearest", tmp_path / "c")
    data = CacheBatches(built, np.arange(12), labels, 4, shuffle=True, seed=3, balanced=True,
                        repeat=True)
    assert data.batches_per_epoch == 5
    for epoch in range(2):
        xs, ys = zip(*(data[5 * epoch + i] for i in range(5)))
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert len(x) == 18 and y.sum(axis=0).tolist() == [9.0, 9.0]
        assert ((x.mean(axis=(1, 2, 3)) > 127) == (y[:, 1] == 1)).all()
