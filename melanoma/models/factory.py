"""Classifier factory: a registered backbone (models/backbones.py) -> GlobalAveragePooling ->
Dense relu -> Dense softmax."""
from __future__ import annotations

import os
from pathlib import Path

from melanoma.models.backbones import MIN_IMAGE_SIZE, Backbone, get_backbone
from melanoma.util.errors import UserError


def keras_models_dir() -> Path:
    """Where keras.applications looks for weight files: $KERAS_HOME/models or ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def resolve_weights(backbone: Backbone, weights: str):
    """Map the config's ``weights`` to keras' argument, or say what file is missing where."""
    if weights == "none":
        return None
    if backbone.own_code:
        raise UserError(f"backbone {backbone.constructor}: weights must be \"none\" for your own "
                        f"builder (load any weights inside your function)")
    if weights == "imagenet":
        expected = keras_models_dir() / backbone.weights_file
        if not expected.is_file():
            raise UserError(
                f"ImageNet weights for {backbone.label} are not available offline: place "
                f"{backbone.weights_file} (the file keras.applications downloads for it) at "
                f"{expected}, or use weights = \"none\"")
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist (weights = \"imagenet\", \"none\" "
                        f"or the path of a .h5/.weights.h5 file)")
    return str(path)


def check_image_size(backbone: Backbone, image_size: int | None) -> int:
    """The input size to use: the given one (>= the backbone's minimum) or its default."""
    size = backbone.default_size if image_size is None else int(image_size)
    if size < max(backbone.min_size, MIN_IMAGE_SIZE):
        raise UserError(f"image_size {size} is below {backbone.label}'s minimum of "
                        f"{backbone.min_size}")
    return size


def build_classifier(backbone: str, image_size: int | None, weights: str = "none",
                     head_units: int = 128, dropout: float = 0.0, freeze_backbone: bool = False,
                     bn_momentum: float | None = 0.9):
    """A compiled-later keras.Model mapping (size, size, 3) pixels to 2 softmax columns.

    The defaults are a config row's (melanoma.config.VariantConfig; tests/test_model.py
    checks they agree); ``image_size`` None is the backbone's own size.

    The last Dense is float32 even under a mixed-precision policy, so probabilities are
    exact enough for AUC. ``bn_momentum`` overrides the backbone's BatchNormalization
    momentum (None keeps Keras' 0.99): with few steps, as on CPU, moving statistics at 0.99
    stay near their initial values and inference collapses to one class.
    """
    import keras

    spec = get_backbone(backbone)
    size = check_image_size(spec, image_size)
    base = spec.build(size, resolve_weights(spec, weights))
    base.trainable = not freeze_backbone
    for layer in base.layers:  # the family's fixed input scaling never trains
        if layer.name.startswith("input_scaling_"):
            layer.trainable = False
    if spec.own_code:  # a nested model: the head follows its output
        inputs = keras.Input((size, size, 3), name="pixels")
        features = base(inputs)
    else:
        inputs, features = base.input, base.output
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    if len(features.shape) != 4:
        raise UserError(f"backbone {spec.label} gives a {len(features.shape)}-D output; the head "
                        f"needs a 4-D (N, h, w, channels) feature map")
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="head_dense")(x)
    outputs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="head_softmax")(x)
    return keras.Model(inputs, outputs, name=model_name(spec))


def model_name(spec: Backbone) -> str:
    """efficientnet_b0_classifier (as before the registry), resnet50_classifier, ..."""
    if spec.constructor.startswith("EfficientNetB"):
        return f"efficientnet_{spec.name.lower()}_classifier"
    stem = "".join(c if c.isalnum() else "_" for c in spec.constructor.lower())
    return f"{stem}_classifier"
