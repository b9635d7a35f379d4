"""The model's input step on every backend: uint8 pixels -> float32 -> random warp (training
only) -> preprocessing, in backend-neutral Keras ops.

The loader (melanoma/data/loader.py) hands uint8 batches of the decoded-image cache to a
model :func:`with_image_input` builds: an :class:`ImageInput` layer in front of the network.
In training it draws one projective transform per image (rotation, shear, both flips:
melanoma/data/augmentation.py, the original ``ImageDataGenerator`` transform) from its own
``keras.random.SeedGenerator``, so the draws are part of the model's state (checkpointed,
reset by the model pool) and a resumed run continues bit for bit. Then it runs the
preprocessing variant, in the original order (augmentation -> rescale -> centring).

The ranges and the preprocessing are the layer's (non-trainable) variables, set by
:func:`configure`, so variants that differ only in them share one traced model. What is
saved is the network alone (:func:`network_of`), whose input is the preprocessed float32
batch as before; prediction puts the same layer, in inference mode, in front of any network
(:func:`for_inference`), trained here or loaded from an older file.
"""
from __future__ import annotations

import math

import keras

from melanoma.data.augmentation import Augmentation, random_matrices, warp
from melanoma.data.preprocessing import Preprocessing

NAME = "image_input"


@keras.saving.register_keras_serializable(package="melanoma")
class ImageInput(keras.layers.Layer):
    """uint8 (B, H, W, 3) -> float32, random warp when ``training`` (only if ``augment``),
    then ``x * scale - samplewise * mean(image) - channel_mean``."""

    def __init__(self, augment: bool = False, seed: int = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # float32 also under mixed precision
        super().__init__(**kwargs)
        self.augment, self.seed = bool(augment), int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # rotation, shear (radians), horizontal, vertical flip (0/1)
        self.ranges = self.add_weight((4,), initializer="zeros", trainable=False, name="ranges")
        # scale, samplewise (0/1), channel mean (3)
        self.prep = self.add_weight((5,), initializer="zeros", trainable=False,
                                    name="preprocessing")
        self.prep.assign([1.0, 0.0, 0.0, 0.0, 0.0])
        # Keras turns XLA off for a model holding a layer that does not support it:
        # TensorFlow's projective-transform op has no XLA kernel (JAX's sampling compiles)
        self.supports_jit = not (self.augment and keras.backend.backend() == "tensorflow")

    def configure(self, augmentation: Augmentation, preprocessing: Preprocessing) -> None:
        """Set the warp's ranges and the preprocessing (with its fitted mean, if any)."""
        if augmentation.active and not self.augment:
            raise ValueError("this input layer was built without augmentation")
        scale, samplewise, mean = preprocessing.layer_parameters()
        self.ranges.assign([math.radians(augmentation.rotation_deg),
                            math.radians(augmentation.shear_deg),
                            float(augmentation.horizontal_flip), float(augmentation.vertical_flip)])
        self.prep.assign([scale, samplewise, *mean])

    def call(self, images, training=False):
        ops = keras.ops
        x = ops.cast(images, "float32")
        if training and self.augment:
            matrices = random_matrices(ops.shape(x)[0], x.shape[1], x.shape[2], self.ranges[0],
                                       self.ranges[1], self.ranges[2], self.ranges[3],
                                       self.seed_generator)
            x = warp(x, matrices)
        x = x * self.prep[0]
        x = x - self.prep[1] * ops.mean(x, axis=(1, 2, 3), keepdims=True)
        return x - self.prep[2:5]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "augment": self.augment, "seed": self.seed}


def pool_key(augmentation: Augmentation) -> str:
    """What the input layer adds to a model pool's key: whether it warps at all."""
    return ":warp" if augmentation.active else ":nowarp"


def with_image_input(network, augmentation: Augmentation, preprocessing: Preprocessing,
                     seed: int = 0):
    """A model uint8 images -> ``network``'s output, :class:`ImageInput` in front."""
    images = keras.Input(network.input_shape[1:], dtype="uint8", name="uint8_images")
    layer = ImageInput(augmentation.active, seed, name=NAME)
    model = keras.Model(images, network(layer(images)), name=f"{network.name}_uint8")
    layer.configure(augmentation, preprocessing)
    return model


def configure(model, augmentation: Augmentation, preprocessing: Preprocessing) -> None:
    """Set the ranges and preprocessing of the input layer of a :func:`with_image_input`
    model (after the model pool reset its variables)."""
    model.get_layer(NAME).configure(augmentation, preprocessing)


def network_of(model):
    """The network to save: the one inside a :func:`with_image_input` model."""
    return model.layers[-1] if any(isinstance(x, ImageInput) for x in model.layers) else model


def for_inference(network, preprocessing: Preprocessing):
    """``network`` (its input preprocessed float32) fed uint8 images: preprocessing in the
    input layer, no augmentation. Build once per network: each new model traces anew."""
    return with_image_input(network, Augmentation(), preprocessing)
