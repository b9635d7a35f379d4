"""Tests for melanoma.data.augmentation against an independent re-implementation of the legacy
``ImageDataGenerator`` transform (``apply_affine_transform`` + ``flip_axis``).

The legacy code builds ``M = R(theta) @ S(shear)`` with R = [[cos, -sin], [sin, cos]] and
S = [[1, -sin(shear)], [0, cos(shear)]], moves it to the centre o = (h/2 - 0.5, w/2 - 0.5),
and samples with ``scipy.ndimage.affine_transform(order=1, mode='nearest')``; then it flips
the column axis (horizontal) and the row axis (vertical). For a channels-last image it first
swaps the matrix's axes (``M' = P M P``, "Matrix construction assumes that coordinates are
x, y"): M acts on (x, y) = (column, row). That is what Keras 2.x tf.keras (TF 2.15) and Keras
3's ``keras.src.legacy`` ship; older keras-preprocessing releases applied M to (row, column).
"""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf

from melanoma.data.augmentation import (
    Augmentation,
    affine_matrices,
    augment_batch,
    warp,
)

SIZE = 32
BORDER = 6  # pixels near the edge depend on how the fill mode meets bilinear sampling
CASES = [  # theta (deg), shear (deg), horizontal flip, vertical flip
    (0.0, 0.0, False, False), (15.0, 0.0, False, False), (0.0, 10.0, False, False),
    (-20.0, 5.0, True, False), (30.0, -8.0, False, True), (10.0, 3.0, True, True),
    (0.0, 0.0, True, True), (-7.0, 0.2, False, False),
]


def smooth_image(seed=0, size=SIZE):
    """A random smooth float image in [0, 1] (bilinear sampling is accurate on it)."""
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(rng.random((size, size, 3)), sigma=(3, 3, 0))
    return (image - image.min()) / (image.max() - image.min())


def legacy_reference(image, theta_deg, shear_deg, hflip, vflip, axes="xy"):
    """The legacy transform written out; ``axes='xy'`` is the shipped (swapped) convention,
    ``axes='rowcol'`` the old one that applied M to (row, column) directly."""
    t, s = math.radians(theta_deg), math.radians(shear_deg)
    rotation = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shear = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
    h, w = image.shape[:2]
    o_x, o_y = h / 2 - 0.5, w / 2 - 0.5  # the legacy offset: (h, w) order, whatever the axes
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    matrix = offset @ rotation @ shear @ reset
    if axes == "xy":
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
        matrix = swap @ matrix @ swap
    out = np.stack([ndi.affine_transform(image[..., c], matrix[:2, :2], matrix[:2, 2],
                                         order=1, mode="nearest")
                    for c in range(image.shape[2])], axis=-1)
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1]
    return out


def library(image, theta_deg, shear_deg, hflip, vflip):
    h, w = image.shape[:2]
    matrices = affine_matrices(tf.constant([math.radians(theta_deg)]),
                               tf.constant([math.radians(shear_deg)]),
                               tf.constant([-1.0 if vflip else 1.0]),
                               tf.constant([-1.0 if hflip else 1.0]), h, w)
    return np.asarray(warp(tf.constant(image[None], tf.float32), matrices))[0]


def interior(array):
    return array[BORDER:-BORDER, BORDER:-BORDER]


@pytest.mark.parametrize("theta,shear,hflip,vflip", CASES)
def test_matches_legacy_reference(theta, shear, hflip, vflip):
    image = smooth_image()
    got = library(image, theta, shear, hflip, vflip)
    want = legacy_reference(image, theta, shear, hflip, vflip)
    assert got.shape == image.shape
    # the image's range is 1: agree to 1e-3 of it away from the border; observed ~3e-7
    # everywhere, border included (float32 rounding), so the whole image is held to 1e-5
    assert np.abs(interior(got - want)).max() < 1e-3
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy.ndimage.interpolation
@pytest.mark.parametrize("module", ["keras.src.legacy.preprocessing.image",  # Keras 3
                                    "tf_keras.src.preprocessing.image"])  # tf.keras 2.x line
@pytest.mark.parametrize("theta,shear,hflip,vflip", CASES)
def test_reference_is_the_shipped_legacy_code(module, theta, shear, hflip, vflip):
    """Pins the reference above to the code Keras ships (private modules; skipped if absent)."""
    legacy = pytest.importorskip(module)
    image = smooth_image(1)
    want = legacy.apply_affine_transform(image, theta, shear=shear, row_axis=0, col_axis=1,
                                         channel_axis=2, fill_mode="nearest", order=1)
    if hflip:
        want = legacy.flip_axis(want, 1)
    if vflip:
        want = legacy.flip_axis(want, 0)
    np.testing.assert_allclose(legacy_reference(image, theta, shear, hflip, vflip), want,
                               atol=1e-12)
    assert np.abs(interior(library(image, theta, shear, hflip, vflip) - want)).max() < 1e-3


@pytest.mark.parametrize("theta,shear", [(15.0, 0.0), (0.0, 10.0), (0.0, 0.5)])
def test_conventions_are_distinguishable(theta, shear):
    """The comparison above can fail: the (row, column) convention rotates the other way
    and shears the other axis, which moves interior pixels well beyond the tolerance."""
    image = smooth_image(2)
    xy = legacy_reference(image, theta, shear, False, False, axes="xy")
    rowcol = legacy_reference(image, theta, shear, False, False, axes="rowcol")
    got = library(image, theta, shear, False, False)
    assert np.abs(interior(xy - rowcol)).max() > 1e-3
    assert np.abs(interior(got - rowcol)).max() > 1e-3


def test_inactive_augmentation_returns_batch_unchanged():
    batch = tf.constant(np.random.default_rng(0).random((3, 8, 8, 3)), tf.float32)
    aug = Augmentation()
    assert not aug.active and aug.describe() == "none"
    assert augment_batch(batch, aug, 12) is batch


def random_batch(n, seed=0):
    return tf.constant(np.random.default_rng(seed).random((n, 16, 16, 3)), tf.float32)


def flip_kinds(batch, out):
    """For each image: which of identity / h / v / hv it is, exactly (None if neither)."""
    kinds = []
    for x, y in zip(np.asarray(batch), np.asarray(out)):
        candidates = {"none": x, "h": x[:, ::-1], "v": x[::-1], "hv": x[::-1, ::-1]}
        kinds.append(next((k for k, c in candidates.items() if np.array_equal(y, c)), None))
    return kinds


def test_horizontal_flip_only_mirrors_columns_exactly():
    batch = random_batch(32)
    out = augment_batch(batch, Augmentation(horizontal_flip=True), 34)
    kinds = flip_kinds(batch, out)
    assert set(kinds) == {"none", "h"}, kinds


def test_vertical_flip_only_mirrors_rows_exactly():
    batch = random_batch(32)
    out = augment_batch(batch, Augmentation(vertical_flip=True), 34)
    assert set(flip_kinds(batch, out)) == {"none", "v"}


def test_both_flips_are_independent_coins():
    batch = random_batch(64)
    out = augment_batch(batch, Augmentation(horizontal_flip=True, vertical_flip=True),
                        56)
    kinds = flip_kinds(batch, out)
    assert None not in kinds
    assert set(kinds) == {"none", "h", "v", "hv"}  # one coin would give only none / hv
    for kind in ("none", "h", "v", "hv"):
        assert 4 <= kinds.count(kind) <= 32, kinds  # 64 draws of p=1/4: mean 16


FULL = Augmentation(rotation_deg=20.0, shear_deg=5.0, horizontal_flip=True, vertical_flip=True)


def test_same_seed_same_output_different_seed_different_output():
    batch = random_batch(8)
    first = np.asarray(augment_batch(batch, FULL, 78))
    again = np.asarray(augment_batch(batch, FULL, 78))
    other = np.asarray(augment_batch(batch, FULL, 79))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first, batch.numpy())


def implied_angles(matrices):
    """Rotation angle (deg) of each (rotation-only) TF transform: x_in = cos x - ... ."""
    m = np.asarray(matrices)
    return np.degrees(np.arctan2(np.abs(m[:, 1]), m[:, 0]))


@pytest.mark.parametrize("limit", [5.0, 20.0])
def test_rotation_range_is_in_degrees(limit):
    from melanoma.data.augmentation import transform_matrices

    matrices = transform_matrices(Augmentation(rotation_deg=limit), 2000, SIZE, SIZE,
                                  12)
    angles = implied_angles(matrices)
    assert angles.max() <= limit + 1e-4
    assert angles.max() > 0.95 * limit  # uniform on [-limit, limit]: the edge is reached
    np.testing.assert_allclose(np.hypot(np.asarray(matrices)[:, 0], np.asarray(matrices)[:, 1]), 1.0,
                               atol=1e-5)  # a pure rotation: no scaling


def test_shear_range_is_in_degrees():
    from melanoma.data.augmentation import transform_matrices

    limit = 0.2  # the legacy shear_range=0.2 meant 0.2 DEGREES
    m = np.asarray(transform_matrices(Augmentation(shear_deg=limit), 2000, SIZE, SIZE, 12))
    # a shear of s degrees: one off-diagonal entry is -sin(s), the other 0
    off_diagonal = np.abs(m[:, [1, 3]]).max(axis=1)
    shear = np.degrees(np.arcsin(off_diagonal))
    assert shear.max() <= limit + 1e-4 and shear.max() > 0.95 * limit
