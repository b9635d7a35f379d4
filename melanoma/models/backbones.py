"""The backbone registry: every keras.applications classifier by name, and your own builder.

    backbone = "B0"                   # EfficientNet-B0 (also "EfficientNetB0")
    backbone = "ResNet50"             # any keras.applications constructor, by name
    backbone = "mypkg.nets:build"     # your function (input_shape) -> keras.Model (needs
                                      # trust_model_code = true: it runs your code)

Each entry is data: constructor, native input size, smallest input, the ImageNet file keras
looks for, and how the family expects its pixels (``input_scaling``). Every backbone is fed
the same tensor (the preprocessing variant's output, "pixels in [0, 255]" for ``native``);
a family whose model does not scale its own input gets the keras.applications
``preprocess_input`` arithmetic as a fixed first layer, so ``native`` means the same on every
architecture. Families whose models include that layer themselves (EfficientNet,
EfficientNetV2, ConvNeXt, MobileNetV3) get nothing extra.
"""
from __future__ import annotations

from dataclasses import dataclass

from melanoma.util.errors import UserError, unknown_name

MIN_IMAGE_SIZE = 32  # the smallest input any keras.applications backbone takes

# How a family maps pixels in [0, 255] to its input (keras.applications preprocess_input):
# "included": the model does it itself; "tf": to [-1, 1]; "torch": /255 then ImageNet
# mean/std per channel; "caffe": RGB -> BGR, then minus the ImageNet mean per channel.
SCALINGS = ("included", "tf", "torch", "caffe")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    """One backbone: how to build it headless and what it expects."""

    name: str
    constructor: str  # a keras.applications attribute, or "module:function" (own builder)
    default_size: int
    weights_file: str | None  # what keras looks for in $KERAS_HOME/models/ (None: own code)
    input_scaling: str = "included"
    min_size: int = MIN_IMAGE_SIZE
    stride: int = 32  # the last block's map is ceil(image_size / stride) on a side

    def feature_side(self, image_size: int) -> int:
        """Side of the last convolutional block's map (what Grad-CAM is drawn from)."""
        return -(-int(image_size) // self.stride)

    @property
    def own_code(self) -> bool:
        return ":" in self.constructor

    @property
    def label(self) -> str:
        """The name printed in reports (EfficientNetB0, ResNet50, mypkg.nets:build)."""
        return self.constructor

    def build(self, image_size: int, weights):
        """The headless feature extractor for square ``image_size`` RGB inputs; its input
        takes the preprocessing variant's output (``native``: pixels in [0, 255])."""
        import keras

        shape = (image_size, image_size, 3)
        if self.own_code:
            return build_own(self.constructor, shape)
        factory = getattr(keras.applications, self.constructor)
        scaling = input_scaling_layer(self.input_scaling)
        if scaling is None:  # the model scales its own input
            return factory(include_top=False, weights=weights, input_shape=shape)
        inputs = keras.Input(shape, name="pixels")
        return factory(include_top=False, weights=weights, input_tensor=scaling(inputs))


def input_scaling_layer(scaling: str):
    """A fixed (non-trainable) 1x1 convolution doing ``scaling``'s per-channel affine map and
    channel order, or None for "included": a plain layer, so saved models load safely."""
    import keras
    import numpy as np

    if scaling == "included":
        return None
    matrix, bias = np.eye(3, dtype="float32"), np.zeros(3, dtype="float32")
    if scaling == "tf":
        matrix, bias = matrix / 127.5, bias - 1.0
    elif scaling == "torch":
        std = np.array(IMAGENET_STD, dtype="float32")
        matrix, bias = np.diag(1 / (255.0 * std)), -np.array(IMAGENET_MEAN) / std
    elif scaling == "caffe":  # output channel c reads input channel 2 - c (RGB -> BGR)
        matrix, bias = matrix[::-1].T.copy(), -np.array(CAFFE_MEAN_BGR)
    layer = keras.layers.Conv2D(3, 1, name=f"input_scaling_{scaling}", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([matrix.reshape(1, 1, 3, 3).astype("float32"), bias.astype("float32")])
    return layer


def build_own(path: str, input_shape: tuple):
    """Call the user's ``module:function`` with ``input_shape``; it must return a
    keras.Model (a feature extractor: the harness adds pooling and the head)."""
    import keras

    builder = own_builder(path)
    try:
        model = builder(input_shape)
    except UserError:
        raise
    except Exception as error:  # the user's code: say whose and what, in one line
        raise UserError(f"backbone {path}: building failed ({type(error).__name__}: "
                        f"{(str(error).splitlines() or [''])[0]})") from error
    if not isinstance(model, keras.Model):
        raise UserError(f"backbone {path} returned {type(model).__name__}, not a keras.Model")
    return model


def own_builder(path: str):
    """The callable named by ``module:function`` (imported: runs the module's code)."""
    import importlib

    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"backbone {path}: cannot import {module_name} ({error}); is it on "
                        f"PYTHONPATH?") from None
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise UserError(f"backbone {path}: {module_name} has no function {attribute!r}")
    return builder


def _app(constructor: str, size: int, weights_file: str, scaling: str = "included",
         min_size: int = MIN_IMAGE_SIZE, name: str | None = None) -> Backbone:
    return Backbone(name or constructor, constructor, size, weights_file, scaling, min_size)


def _resnet(depth: int, v2: bool = False) -> Backbone:
    stem = f"resnet{depth}{'v2' if v2 else ''}"
    return _app(f"ResNet{depth}{'V2' if v2 else ''}", 224,
                f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5", "tf" if v2 else "caffe")


def _keras_file(stem: str) -> str:
    return f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5"


_EFFICIENTNET_SIZES = (224, 240, 260, 300, 380, 456, 528, 600)
_V2 = {"B0": 224, "B1": 240, "B2": 260, "B3": 300, "S": 384, "M": 480, "L": 480}

BACKBONES = {b.name: b for b in (
    *(_app(f"EfficientNetB{i}", s, f"efficientnetb{i}_notop.h5", name=f"B{i}")
      for i, s in enumerate(_EFFICIENTNET_SIZES)),
    *(_app(f"EfficientNetV2{k}", s, f"efficientnetv2-{k.lower()}_notop.h5")
      for k, s in _V2.items()),
    *(_app(f"ConvNeXt{k}", 224, f"convnext_{k.lower()}_notop.h5")
      for k in ("Tiny", "Small", "Base", "Large", "XLarge")),
    _app("MobileNetV3Small", 224, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    _app("MobileNetV3Large", 224, "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    _app("MobileNet", 224, "mobilenet_1_0_224_tf_no_top.h5", "tf"),
    _app("MobileNetV2", 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
         "tf"),
    *(_resnet(d) for d in (50, 101, 152)),
    *(_resnet(d, v2=True) for d in (50, 101, 152)),
    *(_app(f"DenseNet{d}", 224, _keras_file(f"densenet{d}"), "torch") for d in (121, 169, 201)),
    _app("VGG16", 224, _keras_file("vgg16"), "caffe"),
    _app("VGG19", 224, _keras_file("vgg19"), "caffe"),
    _app("Xception", 299, _keras_file("xception"), "tf", min_size=71),
    _app("InceptionV3", 299, _keras_file("inception_v3"), "tf", min_size=75),
    _app("InceptionResNetV2", 299, "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
         "tf", min_size=75),
    _app("NASNetMobile", 224, "nasnet_mobile_no_top.h5", "tf"),
    _app("NASNetLarge", 331, "nasnet_large_no_top.h5", "tf"),
)}


def _normal(name: str) -> str:
    return name.upper().replace("-", "").replace("_", "").replace(" ", "")


_ALIASES = {**{_normal(b.constructor): b for b in BACKBONES.values()},
            **{_normal(b.name): b for b in BACKBONES.values()}}

OWN_CODE_DEFAULT_SIZE = 224  # an own builder's size when the config sets none


def get_backbone(name: str) -> Backbone:
    """Look a backbone up: a registry name (``B6``, ``EfficientNetB6``, ``ResNet50``; any case,
    dashes and underscores ignored), or ``module:function`` for your own builder (not
    imported here: ``check_own_code`` says whether it may run)."""
    text = str(name)
    if ":" in text:
        module_name, _, attribute = text.partition(":")
        if not module_name or not attribute.isidentifier() or not all(
                part.isidentifier() for part in module_name.split(".")):
            raise UserError(f"backbone {text!r}: write an own builder as module.path:function")
        return Backbone(text, text, OWN_CODE_DEFAULT_SIZE, None, "included")
    spec = _ALIASES.get(_normal(text))
    if spec is None:
        raise unknown_name("backbone", text, BACKBONES, match=_closest_name(text))
    return spec


def _closest_name(text: str) -> str:
    """The registry name whose normal form is nearest (so "resnet5" suggests ResNet50)."""
    import difflib

    hit = difflib.get_close_matches(_normal(text), list(_ALIASES), n=1)
    return _ALIASES[hit[0]].name if hit else text


def check_own_code(spec: Backbone, trusted: bool, where: str = "") -> None:
    """An own builder runs the user's Python: refuse unless the config says it is trusted."""
    if spec.own_code and not trusted:
        prefix = f"{where}: " if where else ""
        raise UserError(f"{prefix}backbone {spec.constructor!r} runs code from your Python "
                        f"path; set trust_model_code = true for this variant if you trust it")
