"""Tests for melanoma.models.factory and melanoma.models.backbones: tiny EfficientNet-B0 classifiers at 32 px."""

import keras
import numpy as np
import pytest

from melanoma.models.backbones import BACKBONES, MIN_IMAGE_SIZE, get_backbone
from melanoma.models.factory import (
    build_classifier,
    check_image_size,
    keras_models_dir,
    resolve_weights,
)
from melanoma.models.training import compile_classifier
from melanoma.util.errors import UserError

SIZE = 32


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_classifier("B0", SIZE, "none", head_units=8, bn_momentum=None)


def pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_output_is_two_softmax_columns(model):
    probs = model.predict(pixels(3), verbose=0)
    assert probs.shape == (3, 2)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs >= 0).all()
    assert model.input_shape == (None, SIZE, SIZE, 3)


def test_last_layer_is_float32_softmax(model):
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.units == 2
    assert last.dtype_policy.compute_dtype == "float32" and last.dtype == "float32"
    assert last.activation is keras.activations.softmax
    head = model.get_layer("head_dense")
    assert head.units == 8 and head.activation is keras.activations.relu
    assert model.get_layer("head_pool") is not None


def test_last_layer_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_classifier("B0", SIZE, "none", head_units=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("head_dense").dtype_policy.compute_dtype == "float16"
    assert mixed.layers[-1].dtype_policy.compute_dtype == "float32"
    assert mixed.output.dtype == "float32"


def test_one_train_on_batch_runs_and_changes_weights(model):
    compile_classifier(model, 1e-3)
    model.run_eagerly = True  # tracing the step costs ~25 s; graph mode: test_training.py
    before = [w.copy() for w in model.get_layer("head_softmax").get_weights()]
    labels = np.eye(2, dtype=np.float32)[[0, 1, 1, 0]]
    logs = model.train_on_batch(pixels(4, seed=1), labels, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    assert {"loss", "accuracy", "auc"} <= set(logs)
    after = model.get_layer("head_softmax").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_image_size_below_minimum():
    assert MIN_IMAGE_SIZE == 32
    with pytest.raises(UserError, match="image_size 31 is below EfficientNetB0's minimum of 32"):
        build_classifier("B0", 31, "none")
    assert check_image_size(get_backbone("B0"), 32) == 32
    assert check_image_size(get_backbone("B6"), None) == 528


def test_unknown_backbone_did_you_mean():
    with pytest.raises(UserError) as info:
        build_classifier("EfficientNetB66", SIZE)
    message = str(info.value)
    assert "unknown backbone 'EfficientNetB66'" in message
    assert "did you mean 'B6'?" in message
    assert "known: B0, B1, B2, B3, B4, B5, B6, B7" in message
    with pytest.raises(UserError, match="did you mean 'ResNet50'"):
        get_backbone("ResNet5")


@pytest.mark.parametrize("name", ["B6", "b6", "EfficientNetB6", "efficientnet-b6",
                                  "EFFICIENTNET_B6"])
def test_backbone_name_spellings(name):
    assert get_backbone(name) is BACKBONES["B6"]


def test_backbone_table():
    sizes = {name: b.default_size for name, b in BACKBONES.items() if name.startswith("B")}
    assert sizes == {"B0": 224, "B1": 240, "B2": 260, "B3": 300, "B4": 380, "B5": 456,
                     "B6": 528, "B7": 600}
    for index in range(8):
        backbone = BACKBONES[f"B{index}"]
        assert backbone.constructor == f"EfficientNetB{index}"
        assert hasattr(keras.applications, backbone.constructor)
        assert backbone.weights_file == f"efficientnetb{index}_notop.h5"


def test_imagenet_weights_missing_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_models_dir() == tmp_path / "models"
    with pytest.raises(UserError) as info:
        build_classifier("B6", 64, "imagenet")
    message = str(info.value)
    assert "efficientnetb6_notop.h5" in message
    assert str(tmp_path / "models" / "efficientnetb6_notop.h5") in message
    assert "\n" not in message
    assert not (tmp_path / "models").exists()  # nothing was downloaded or created


def test_imagenet_weights_present_are_passed_as_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientnetb0_notop.h5").write_bytes(b"placeholder")
    assert resolve_weights(get_backbone("B0"), "imagenet") == "imagenet"
    with pytest.raises(UserError, match="efficientnetb3_notop.h5"):
        resolve_weights(get_backbone("B3"), "imagenet")  # another backbone's file is not it


def test_keras_models_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keras_models_dir() == tmp_path / ".keras" / "models"


def test_weights_path(tmp_path):
    with pytest.raises(UserError, match=r"weights file .*nope\.h5 does not exist"):
        build_classifier("B0", SIZE, str(tmp_path / "nope.h5"))
    existing = tmp_path / "w.weights.h5"
    existing.write_bytes(b"")
    assert resolve_weights(get_backbone("B0"), str(existing)) == str(existing)
    assert resolve_weights(get_backbone("B0"), "none") is None


def batch_norms(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_bn_momentum_override_on_every_batchnorm():
    tuned = build_classifier("B0", SIZE, "none", head_units=4, bn_momentum=0.9)
    norms = batch_norms(tuned)
    assert len(norms) >= 40  # B0 has 49
    assert {layer.momentum for layer in norms} == {0.9}


def test_factory_defaults_are_a_config_rows():
    """build_classifier's defaults agree with VariantConfig's: a model built in a notebook
    with the defaults is the model a config row with the defaults trains."""
    import inspect

    from melanoma.config import VariantConfig

    row = VariantConfig(name="x")
    given = {k: p.default for k, p in inspect.signature(build_classifier).parameters.items()
             if p.default is not inspect.Parameter.empty}
    assert given == {k: getattr(row, k) for k in given}
    assert set(given) == {"weights", "head_units", "dropout", "freeze_backbone", "bn_momentum"}


def test_bn_momentum_none_is_keras(model):
    assert {layer.momentum for layer in batch_norms(model)} == {0.99}


def test_freeze_backbone_and_dropout():
    frozen = build_classifier("B0", SIZE, "none", head_units=4, dropout=0.3,
                              freeze_backbone=True)
    trainable = {w.path.split("/")[0] for w in frozen.trainable_weights}
    assert trainable == {"head_dense", "head_softmax"}
    assert frozen.get_layer("head_dropout").rate == 0.3
