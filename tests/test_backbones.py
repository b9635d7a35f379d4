"""The backbone registry: every keras.applications classifier by name with its own input
scaling, and a user's own builder by import path (only with trust_model_code)."""
from __future__ import annotations

import textwrap

import keras
import numpy as np
import pytest

from melanoma import config
from melanoma.explain.gradcam import find_layer, gradcam
from melanoma.models.backbones import BACKBONES, get_backbone, input_scaling_layer
from melanoma.models.factory import build_classifier, resolve_weights
from melanoma.models.training import compile_classifier
from melanoma.util.errors import UserError

SIZE = 32


def test_every_keras_applications_classifier_is_registered():
    constructors = {b.constructor for b in BACKBONES.values()}
    in_keras = {n for n in dir(keras.applications) if n[0].isupper()}
    assert constructors == in_keras
    for spec in BACKBONES.values():
        assert spec.input_scaling in ("included", "tf", "torch", "caffe")
        assert spec.default_size >= spec.min_size >= 32 and spec.weights_file.endswith(".h5")


@pytest.mark.parametrize("scaling, reference", [
    ("caffe", keras.applications.resnet.preprocess_input),
    ("tf", keras.applications.resnet_v2.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
])
def test_input_scaling_is_the_familys_preprocess_input(scaling, reference):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    ours = np.asarray(input_scaling_layer(scaling)(pixels))
    np.testing.assert_allclose(ours, np.asarray(reference(pixels.copy())), atol=1e-4)


def test_family_preprocessing_is_declared_as_keras_documents():
    scaling = {name: BACKBONES[name].input_scaling for name in (
        "B0", "EfficientNetV2B0", "ConvNeXtTiny", "MobileNetV3Small", "ResNet50", "ResNet50V2",
        "MobileNetV2", "DenseNet121", "VGG16")}
    assert scaling == {"B0": "included", "EfficientNetV2B0": "included",
                       "ConvNeXtTiny": "included", "MobileNetV3Small": "included",
                       "ResNet50": "caffe", "ResNet50V2": "tf", "MobileNetV2": "tf",
                       "DenseNet121": "torch", "VGG16": "caffe"}


def test_unknown_name_says_did_you_mean_and_lists_the_known():
    with pytest.raises(UserError) as info:
        get_backbone("resnet5")
    message = str(info.value)
    assert "did you mean 'ResNet50'?" in message and "ConvNeXtTiny" in message
    assert "\n" not in message
    assert get_backbone("convnext-tiny") is BACKBONES["ConvNeXtTiny"]


def test_imagenet_weights_name_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError) as info:
        resolve_weights(get_backbone("ResNet50"), "imagenet")
    expected = tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert str(expected) in str(info.value) and "\n" not in str(info.value)


def test_resnet50_builds_with_its_fixed_scaling_outside_the_trained_weights():
    model = build_classifier("ResNet50", SIZE, "none", head_units=8)
    scaling = model.get_layer("input_scaling_caffe")
    trained = {id(w) for w in model.trainable_weights}
    assert not scaling.trainable and not any(id(w) in trained for w in scaling.weights)
    assert model.name == "resnet50_classifier" and model.output_shape == (None, 2)
    _, layer = find_layer(model)  # Grad-CAM's layer: the last spatial map, not the scaling
    assert layer.name != "input_scaling_caffe" and layer.output.shape[1] > 1


TINY_NET = '''
import keras

def build(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="tiny_conv")(inputs)
    return keras.Model(inputs, keras.layers.MaxPooling2D(2)(x), name="tiny_net")

def not_a_model(input_shape):
    return "nope"
'''


@pytest.fixture
def tiny_package(tmp_path, monkeypatch):
    (tmp_path / "tinynets.py").write_text(textwrap.dedent(TINY_NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tinynets"


def variant_config(backbone: str, trust: bool) -> dict:
    return {"name": "own", "variants": [{
        "name": "own_net", "preprocessing": "samplewise", "backbone": backbone,
        "image_size": SIZE, "trust_model_code": trust}]}


def test_own_builder_needs_consent_and_then_trains_with_gradcam(tiny_package):
    with pytest.raises(UserError) as refused:
        config.from_dict(variant_config(f"{tiny_package}:build", trust=False))
    assert "trust_model_code = true" in str(refused.value) and "\n" not in str(refused.value)
    cfg = config.from_dict(variant_config(f"{tiny_package}:build", trust=True))
    variant = cfg.variants[0]
    assert variant.resolved_image_size() == SIZE
    model = compile_classifier(build_classifier(variant.backbone, SIZE, "none", head_units=4),
                               1e-3)
    x = np.random.default_rng(2).uniform(0, 1, (4, SIZE, SIZE, 3)).astype("float32")
    model.train_on_batch(x, keras.utils.to_categorical([0, 1, 1, 0], 2))
    path, layer = find_layer(model)  # Grad-CAM reaches into the nested own network
    assert layer.name in ("tiny_conv", "max_pooling2d") or layer.name.startswith("max_pool")
    heat = gradcam(model, (x[:2] * 255).astype("uint8"))
    assert heat.shape[0] == 2 and np.isfinite(heat).all()


@pytest.mark.parametrize("backbone, says", [
    ("tinynets:not_a_model", "returned str, not a keras.Model"),
    ("tinynets:missing", "has no function 'missing'"),
    ("no_such_module_xyz:build", "cannot import no_such_module_xyz"),
    ("not a path:", "module.path:function"),
])
def test_own_builder_mistakes_are_one_line(tiny_package, backbone, says):
    with pytest.raises(UserError) as info:
        build_classifier(backbone, SIZE, "none")
    assert says in str(info.value) and "\n" not in str(info.value)


def test_own_builder_takes_no_weights_file(tiny_package):
    with pytest.raises(UserError, match="weights must be \"none\""):
        build_classifier("tinynets:build", SIZE, "imagenet")


@pytest.mark.slow
def test_run_with_resnet50_writes_the_report(tmp_path, monkeypatch):
    """The command the docs show: the same variant, seeds, gate and report on ResNet50."""
    import json

    from melanoma.cli.main import main

    monkeypatch.chdir(tmp_path)
    code = main(["run", "--set", 'variants.efficient_net_b0_samplewise.backbone="ResNet50"',
                 "--variant", "efficient_net_b0_samplewise", "--limit", "20",
                 "--set", "defaults.epochs=1", "--set", "defaults.image_size=32"])
    assert code == 0
    report = tmp_path / "reports" / "default"
    results = json.loads((report / "results.json").read_text())
    (row,) = [r for r in results["rows"] if r["variant"] == "efficient_net_b0_samplewise"]
    assert results["specs"]["efficient_net_b0_samplewise"]["backbone"] == "ResNet50"
    assert 0.0 <= row["auc"] <= 1.0 and (report / "index.html").stat().st_size > 0
    assert (report / "gallery_efficient_net_b0_samplewise.png").is_file()
