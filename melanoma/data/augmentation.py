"""Random rotation, shear and independent flips as ONE projective transform per image.

Semantics of the original ``ImageDataGenerator``: angles in degrees drawn uniformly from
[-range, range], shear in degrees (x' = x - sin(shear) y, y' = cos(shear) y with x = column,
y = row, as the legacy code applies it to channels-last images), both about the image
centre, bilinear sampling, ``nearest`` fill; then a horizontal and a vertical flip, each
with its own coin. Composing them into one matrix is about 5x faster than chaining Keras'
random layers, and it runs in tf.data (outside the model), so XLA stays usable for the
model itself.
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


def transform_matrices(aug: Augmentation, batch: int, height: int, width: int, seed):
    """(batch, 8) output->input projective transforms (TF's convention) for one batch.

    ``seed`` is a shape-[2] int tensor, so sampling is stateless and reproducible.
    """
    import tensorflow as tf

    seeds = tf.random.split(tf.cast(seed, tf.int64), 4)

    def uniform(i, limit_deg):
        value = tf.random.stateless_uniform([batch], seeds[i], -limit_deg, limit_deg)
        return value * (math.pi / 180.0)

    def coin(i, enabled):
        if not enabled:
            return tf.ones([batch])
        return tf.where(tf.random.stateless_uniform([batch], seeds[i]) < 0.5, -1.0, 1.0)

    return affine_matrices(uniform(0, aug.rotation_deg), uniform(1, aug.shear_deg),
                           coin(3, aug.vertical_flip), coin(2, aug.horizontal_flip),
                           height, width)


def affine_matrices(theta, shear, flip_rows, flip_cols, height: int, width: int):
    """TF transforms for given angles (radians) and flips (+1 keep, -1 flip), per image.

    Legacy matrix A = R(theta) @ Shear(shear) acts on (x, y) = (col, row) (its M' = P M P
    swap), i.e. P A P in the (row, col) coordinates used here, about the centre c; the flips
    act on the output, o -> D o + f. So input = A D o + A (f - c) + c.
    """
    import tensorflow as tf

    sin_t, cos_t, sin_s, cos_s = tf.sin(theta), tf.cos(theta), tf.sin(shear), tf.cos(shear)
    a11, a10 = cos_t, -cos_t * sin_s - sin_t * cos_s  # (row, col) entries of P A P
    a01, a00 = sin_t, -sin_t * sin_s + cos_t * cos_s
    c_row, c_col = height / 2 - 0.5, width / 2 - 0.5
    d_row = tf.where(flip_rows < 0, float(height - 1), 0.0) - c_row
    d_col = tf.where(flip_cols < 0, float(width - 1), 0.0) - c_col
    b_row = a00 * d_row + a01 * d_col + c_row
    b_col = a10 * d_row + a11 * d_col + c_col
    a00, a10 = a00 * flip_rows, a10 * flip_rows
    a01, a11 = a01 * flip_cols, a11 * flip_cols
    zeros = tf.zeros_like(theta)
    # TF wants x=col, y=row: x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2.
    return tf.stack([a11, a10, b_col, a01, a00, b_row, zeros, zeros], axis=1)


def apply_transforms(images, matrices):
    """Warp a float32 (B, H, W, C) batch: bilinear sampling, nearest fill (legacy default)."""
    import tensorflow as tf

    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=matrices, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    warped.set_shape(images.shape)  # keep the static size, so models are not retraced
    return warped


def augment_batch(images, aug: Augmentation, seed):
    """Apply one random transform per image to a float32 (B, H, W, C) batch."""
    import tensorflow as tf

    if not aug.active:
        return images
    matrices = transform_matrices(aug, tf.shape(images)[0], images.shape[1], images.shape[2],
                                  seed)
    return apply_transforms(images, matrices)


def warp_with_gather(images, matrices):
    """The same warp as :func:`apply_transforms` (bilinear, ``nearest`` fill: input
    coordinates clamped to the image) written with gathers, so XLA can compile it on any
    device (``ImageProjectiveTransformV3`` has no XLA kernel); used when augmentation runs
    inside the model (``augment_on = "device"``). Equal to the TF op up to float rounding
    (tests/test_device_augmentation.py)."""
    import tensorflow as tf

    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32),
                             tf.range(width, dtype=tf.float32), indexing="ij")
    m = [tf.reshape(matrices[:, i], [-1, 1, 1]) for i in range(8)]
    k = m[6] * cols + m[7] * rows + 1.0
    x_in = tf.clip_by_value((m[0] * cols + m[1] * rows + m[2]) / k, 0.0, width - 1.0)
    y_in = tf.clip_by_value((m[3] * cols + m[4] * rows + m[5]) / k, 0.0, height - 1.0)
    x_floor, y_floor = tf.floor(x_in), tf.floor(y_in)
    wx, wy = (x_in - x_floor)[..., None], (y_in - y_floor)[..., None]
    x0, y0 = tf.cast(x_floor, tf.int32), tf.cast(y_floor, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
    flat = tf.reshape(images, [-1, height * width, channels])

    def pixels(y, x):
        index = tf.reshape(y * width + x, [tf.shape(images)[0], height * width])
        return tf.reshape(tf.gather(flat, index, batch_dims=1), tf.shape(images))

    top = pixels(y0, x0) * (1.0 - wx) + pixels(y0, x1) * wx
    bottom = pixels(y1, x0) * (1.0 - wx) + pixels(y1, x1) * wx
    warped = top * (1.0 - wy) + bottom * wy
    warped.set_shape(images.shape)
    return warped
