"""Per-backbone facts (constructor, default input size), so scripts never hard-code sizes."""
from __future__ import annotations

from dataclasses import dataclass

from melanoma.util.errors import unknown_name

MIN_IMAGE_SIZE = 32  # keras.applications EfficientNet refuses smaller inputs


@dataclass(frozen=True)
class Backbone:
    """One keras.applications EfficientNet: its constructor name and native input size."""

    name: str
    constructor: str
    default_size: int
    weights_file: str  # what keras looks for in $KERAS_HOME/models/ with weights="imagenet"
    stride: int = 32  # the last block's map is ceil(image_size / stride) on a side

    def feature_side(self, image_size: int) -> int:
        """Side of the last convolutional block's map (what Grad-CAM is drawn from)."""
        return -(-int(image_size) // self.stride)

    def build(self, image_size: int, weights):
        """The headless backbone (include_top=False) for square ``image_size`` inputs."""
        import keras

        factory = getattr(keras.applications, self.constructor)
        return factory(include_top=False, weights=weights,
                       input_shape=(image_size, image_size, 3))


def _efficientnet(index: int, size: int) -> Backbone:
    return Backbone(f"B{index}", f"EfficientNetB{index}", size, f"efficientnetb{index}_notop.h5")


BACKBONES = {b.name: b for b in (
    _efficientnet(0, 224), _efficientnet(1, 240), _efficientnet(2, 260), _efficientnet(3, 300),
    _efficientnet(4, 380), _efficientnet(5, 456), _efficientnet(6, 528), _efficientnet(7, 600),
)}


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name (``B6`` or ``EfficientNetB6``, any case)."""
    key = name.upper().replace("EFFICIENTNET", "").replace("-", "").replace("_", "")
    if key in BACKBONES:
        return BACKBONES[key]
    raise unknown_name("backbone", name, BACKBONES, match=key)
