"""Random rotation, shear and independent flips as ONE projective transform per image.

Semantics of the original ``ImageDataGenerator``: angles in degrees drawn uniformly from
[-range, range], shear in degrees (x' = x - sin(shear) y, y' = cos(shear) y with x = column,
y = row, as the legacy code applies it to channels-last images), both about the image
centre, bilinear sampling, ``nearest`` fill; then a horizontal and a vertical flip, each
with its own coin. Composing them into one matrix is about 5x faster than chaining Keras'
random layers. Written in ``keras.ops`` (``keras.ops.image.affine_transform`` samples), so
it runs inside the model on every backend (melanoma/models/image_input.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transform; all zero/False means no augmentation."""

    rotation_deg: float = 0.0
    shear_deg: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False

    @property
    def active(self) -> bool:
        return bool(self.rotation_deg or self.shear_deg or self.horizontal_flip
                    or self.vertical_flip)

    def describe(self) -> str:
        if not self.active:
            return "none"
        parts = [f"rot±{self.rotation_deg:g}°" if self.rotation_deg else "",
                 f"shear±{self.shear_deg:g}°" if self.shear_deg else "",
                 "hflip" if self.horizontal_flip else "", "vflip" if self.vertical_flip else ""]
        return ", ".join(p for p in parts if p)


def transform_matrices(aug: Augmentation, batch, height: int, width: int, seed):
    """(batch, 8) output->input projective transforms (``affine_transform``'s convention)
    for one batch, drawn with ``seed`` (an int or a ``keras.random.SeedGenerator``)."""
    return random_matrices(batch, height, width, math.radians(aug.rotation_deg),
                           math.radians(aug.shear_deg), float(aug.horizontal_flip),
                           float(aug.vertical_flip), seed)


def random_matrices(batch, height: int, width: int, rotation, shear, hflip, vflip, seed):
    """Transforms for angles drawn in [-rotation, rotation] and [-shear, shear] (radians) and
    flips taken with probability 0.5 where ``hflip`` / ``vflip`` is 1 (never where 0). The
    ranges may be scalars or tensors (the model layer holds them as variables)."""
    import keras

    ops = keras.ops
    u = keras.random.uniform((batch, 4), seed=seed)
    theta = (2.0 * u[:, 0] - 1.0) * rotation
    shear_angle = (2.0 * u[:, 1] - 1.0) * shear
    flip_cols = ops.where(u[:, 2] < 0.5 * ops.cast(hflip, "float32"), -1.0, 1.0)
    flip_rows = ops.where(u[:, 3] < 0.5 * ops.cast(vflip, "float32"), -1.0, 1.0)
    return affine_matrices(theta, shear_angle, flip_rows, flip_cols, height, width)


def affine_matrices(theta, shear, flip_rows, flip_cols, height: int, width: int):
    """Transforms for given angles (radians) and flips (+1 keep, -1 flip), per image.

    Legacy matrix A = R(theta) @ Shear(shear) acts on (x, y) = (col, row) (its M' = P M P
    swap), i.e. P A P in the (row, col) coordinates used here, about the centre c; the flips
    act on the output, o -> D o + f. So input = A D o + A (f - c) + c.
    """
    from keras import ops

    theta, shear = ops.cast(theta, "float32"), ops.cast(shear, "float32")
    flip_rows, flip_cols = ops.cast(flip_rows, "float32"), ops.cast(flip_cols, "float32")
    sin_t, cos_t, sin_s, cos_s = ops.sin(theta), ops.cos(theta), ops.sin(shear), ops.cos(shear)
    a11, a10 = cos_t, -cos_t * sin_s - sin_t * cos_s  # (row, col) entries of P A P
    a01, a00 = sin_t, -sin_t * sin_s + cos_t * cos_s
    c_row, c_col = height / 2 - 0.5, width / 2 - 0.5
    d_row = ops.where(flip_rows < 0, float(height - 1), 0.0) - c_row
    d_col = ops.where(flip_cols < 0, float(width - 1), 0.0) - c_col
    b_row = a00 * d_row + a01 * d_col + c_row
    b_col = a10 * d_row + a11 * d_col + c_col
    a00, a10 = a00 * flip_rows, a10 * flip_rows
    a01, a11 = a01 * flip_cols, a11 * flip_cols
    zeros = ops.zeros_like(theta)
    # x = col, y = row: x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2.
    return ops.stack([a11, a10, b_col, a01, a00, b_row, zeros, zeros], axis=1)


def warp(images, matrices):
    """Warp a float32 (B, H, W, C) batch: bilinear sampling, ``nearest`` fill (the legacy
    default). On TensorFlow this is ``ImageProjectiveTransformV3`` (no XLA kernel)."""
    import keras

    return keras.ops.image.affine_transform(images, matrices, interpolation="bilinear",
                                            fill_mode="nearest", data_format="channels_last")


def augment_batch(images, aug: Augmentation, seed):
    """Apply one random transform per image to a float32 (B, H, W, C) batch."""
    import keras

    if not aug.active:
        return images
    shape = keras.ops.shape(images)
    return warp(images, transform_matrices(aug, shape[0], images.shape[1], images.shape[2],
                                           seed))
