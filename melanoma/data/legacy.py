"""The original ``ImageDataGenerator`` arithmetic, for models trained with it.

``standardize()`` rescaled and centred each image with NumPy in float32, and ``fit()``
took the training mean with one float32 ``np.mean``. The tf.data pipeline of ``run``
computes the same quantities in another order (3.6e-7 apart on inputs, ~4e-6 on the
fixture's outputs; the fitted mean 1.7e-5 apart, ~1e-4 on outputs), so evaluating an
old model repeats the old arithmetic: on tests/fixtures/legacy/ it gives TF 2.15's
inputs bit for bit.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from melanoma.data.preprocessing import FeaturewiseCenter, Preprocessing, Rescale, SamplewiseCenter

PIPELINE = "NumPy float32, as ImageDataGenerator.standardize"
FIT_LIMIT = 1 << 30  # bytes of float32 pixels held at once to repeat ImageDataGenerator.fit


def _rescale(step: Rescale, x: np.ndarray, mean) -> None:
    x *= np.float32(step.scale)


def _samplewise(step: SamplewiseCenter, x: np.ndarray, mean) -> None:
    for image in x:  # one np.mean per image over H, W and C, as standardize() did
        image -= image.mean(keepdims=True)


def _featurewise(step: FeaturewiseCenter, x: np.ndarray, mean) -> None:
    x -= np.asarray(mean, np.float32)


# standardize()'s steps, in place on float32 arrays.
STEPS = {Rescale: _rescale, SamplewiseCenter: _samplewise, FeaturewiseCenter: _featurewise}


def batches(pixels: np.ndarray, preprocessing: Preprocessing, batch_size: int):
    """Float32 batches preprocessed exactly as the original ImageDataGenerator did."""
    for start in range(0, len(pixels), batch_size):
        x = pixels[start:start + batch_size].astype(np.float32)
        for step in preprocessing.steps:
            STEPS[type(step)](step, x, preprocessing.mean)
        yield x


def fit(pixels: np.ndarray, preprocessing: Preprocessing) -> tuple[Preprocessing, str]:
    """The training mean as ImageDataGenerator.fit computed it: one float32 np.mean.

    Beyond FIT_LIMIT it falls back to the exact float64 mean and says so."""
    if pixels.size * 4 > FIT_LIMIT:
        return preprocessing.fit(pixels), "exact float64 mean (too large for float32 np.mean)"
    x = pixels.astype(np.float32)
    for step in preprocessing.steps:
        if getattr(step, "needs_fit", False):
            break
        STEPS[type(step)](step, x, None)
    mean = np.mean(x, axis=(0, 1, 2))
    return (replace(preprocessing, mean=tuple(float(m) for m in mean)),
            "float32 np.mean as ImageDataGenerator.fit")
