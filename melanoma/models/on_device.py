"""Augmentation and preprocessing inside the training model (``augment_on = "device"``).

With ``augment_on = "pipeline"`` (the CPU default) tf.data warps, rescales and centres each
batch on the host and hands float32 to the model. On a GPU that costs host cores: the
random rotation/shear at 528 px runs at about 93 images/s per host core, while B6 trains
at about 260 images/s on an H200 (docs/gpu.md). ``"device"`` moves both steps into the
model the accelerator runs: the pipeline only gathers uint8 rows from the decoded-image
cache (a quarter of float32's bytes cross to the GPU), and a :class:`DeviceInput` layer in
front of the network casts, warps (training only) and preprocesses, XLA-compilable
(:func:`melanoma.data.augmentation.warp_with_gather`).

Same transform, other draws: the per-batch seeds come from the layer's own seed generator
(seeded from the training seed), not from tf.data's stream, so a device-augmented model is
a different (equally valid) training draw from a pipeline-augmented one; the two placements
are keyed apart (``augment_on`` enters the model key when set). The preprocessing keeps the
original order (augmentation -> rescale -> centring). What is saved is the network alone
(:func:`network_of`), whose input is the preprocessed float32 batch as before: evaluation,
Grad-CAM and safe loading see exactly the models the pipeline placement saves.
"""
from __future__ import annotations

import keras

from melanoma.data.augmentation import Augmentation, transform_matrices, warp_with_gather
from melanoma.data.preprocessing import Preprocessing

def placement_key(augmentation: Augmentation, preprocessing: Preprocessing) -> str:
    """What a device-input model adds to the network's pool key: its baked-in transform."""
    return f"device:{augmentation}:{preprocessing}"


class DeviceInput(keras.layers.Layer):
    """uint8 (B, H, W, 3) -> float32, random warp when ``training``, then preprocessing."""

    def __init__(self, augmentation: Augmentation, preprocessing: Preprocessing, seed: int,
                 **kwargs):
        super().__init__(dtype="float32", **kwargs)  # float32 also under mixed precision
        self.augmentation, self.preprocessing = augmentation, preprocessing
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        if training and self.augmentation.active:
            seed = tf.cast(self.seed_generator.next(), tf.int64)
            matrices = transform_matrices(self.augmentation, tf.shape(x)[0], x.shape[1],
                                          x.shape[2], seed)
            x = warp_with_gather(x, matrices)
        return self.preprocessing.apply(x)

    def compute_output_shape(self, input_shape):
        return input_shape


def with_device_input(network, augmentation: Augmentation, preprocessing: Preprocessing,
                      seed: int):
    """A model uint8 images -> ``network``'s output, :class:`DeviceInput` in front."""
    images = keras.Input(network.input_shape[1:], dtype="uint8", name="uint8_images")
    device_input = DeviceInput(augmentation, preprocessing, seed, name="device_input")
    return keras.Model(images, network(device_input(images)), name=f"{network.name}_on_device")


def network_of(model):
    """The network to save: ``model`` itself, or the one inside a :func:`with_device_input`."""
    if any(isinstance(layer, DeviceInput) for layer in model.layers):
        return model.layers[-1]
    return model
