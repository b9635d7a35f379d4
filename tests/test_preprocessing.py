"""Tests for melanoma.data.preprocessing: every variant's numbers against values computed by hand."""

import numpy as np
import pytest
import tensorflow as tf

from melanoma.data.preprocessing import PREPROCESSING, get_preprocessing
from melanoma.util.errors import UserError

# One 2x2 RGB image; divided by 255 it is
#   [[(0, .2, 1), (.4, .6, .8)],
#    [(1, 0, .2), (.2, .4, .6)]]
# channel means .4 (R: 0 .4 1 .2), .3 (G: .2 .6 0 .4), .65 (B: 1 .8 .2 .6);
# the single mean over height, width and channels is 5.4 / 12 = .45.
IMAGE = np.array([[[[0, 51, 255], [102, 153, 204]],
                   [[255, 0, 51], [51, 102, 153]]]], np.uint8)
SCALED = np.array([[[[0, .2, 1], [.4, .6, .8]],
                    [[1, 0, .2], [.2, .4, .6]]]])
# A second training image, all (255, 255, 0) -> (1, 1, 0): over both images (8 pixels)
# the channel means are R (1.6 + 4) / 8 = .7, G (1.2 + 4) / 8 = .65, B 2.6 / 8 = .325.
FLAT = np.tile(np.array([255, 255, 0], np.uint8), (1, 2, 2, 1))
# A "test" image that was not fitted on: all (0, 0, 255) -> (0, 0, 1).
OTHER = np.tile(np.array([0, 0, 255], np.uint8), (1, 2, 2, 1))


def run(variant, pixels, as_tensor):
    x = pixels.astype(np.float32)
    out = variant.apply(tf.constant(x) if as_tensor else x)
    return np.asarray(out, np.float64)


@pytest.fixture(params=[False, True], ids=["numpy", "tf"])
def as_tensor(request):
    return request.param


def test_registry_names():
    assert list(PREPROCESSING) == ["rescale", "samplewise", "featurewise", "native"]


def test_rescale(as_tensor):
    out = run(get_preprocessing("rescale"), IMAGE, as_tensor)
    np.testing.assert_allclose(out, SCALED, atol=1e-6)


def test_native_is_identity_on_0_255(as_tensor):
    out = run(get_preprocessing("native"), IMAGE, as_tensor)
    np.testing.assert_array_equal(out, IMAGE.astype(np.float64))


def test_samplewise_subtracts_one_scalar(as_tensor):
    out = run(get_preprocessing("samplewise"), IMAGE, as_tensor)
    np.testing.assert_allclose(out, SCALED - 0.45, atol=1e-6)
    # one scalar per image: the per-channel means would give .4/.3/.65 here instead
    assert abs(out.mean()) < 1e-6


def test_samplewise_each_image_its_own_mean(as_tensor):
    batch = np.concatenate([IMAGE, FLAT])  # FLAT / 255 has mean (1 + 1 + 0) / 3 = 2/3
    out = run(get_preprocessing("samplewise"), batch, as_tensor)
    np.testing.assert_allclose(out[0], SCALED[0] - 0.45, atol=1e-6)
    np.testing.assert_allclose(out[1], FLAT[0] / 255 - 2 / 3, atol=1e-6)


def test_featurewise_fit_mean_by_hand():
    fitted = get_preprocessing("featurewise").fit(IMAGE)
    np.testing.assert_allclose(fitted.mean, (0.4, 0.3, 0.65), atol=1e-12)
    both = get_preprocessing("featurewise").fit(np.concatenate([IMAGE, FLAT]))
    np.testing.assert_allclose(both.mean, (0.7, 0.65, 0.325), atol=1e-12)


def test_featurewise_uses_the_fitted_pixels_only(as_tensor):
    fitted = get_preprocessing("featurewise").fit(IMAGE)  # "training split" = IMAGE only
    out = run(fitted, OTHER, as_tensor)  # a test image must not move the mean
    expected = OTHER[0] / 255 - np.array([0.4, 0.3, 0.65])
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(run(fitted, IMAGE, as_tensor)[0], SCALED[0] - [0.4, 0.3, 0.65],
                               atol=1e-6)


def test_fit_returns_a_copy_and_is_noop_elsewhere():
    registered = get_preprocessing("featurewise")
    fitted = registered.fit(IMAGE)
    assert registered.mean is None and PREPROCESSING["featurewise"].mean is None
    assert fitted is not registered and fitted.needs_fit
    for name in ("rescale", "samplewise", "native"):
        variant = get_preprocessing(name)
        assert not variant.needs_fit
        assert variant.fit(IMAGE) is variant and variant.fit(IMAGE).mean is None


def test_stored_mean_is_reused(as_tensor):
    stored = get_preprocessing("featurewise", mean=[0.1, 0.2, 0.3])
    assert stored.mean == (0.1, 0.2, 0.3)
    out = run(stored, IMAGE, as_tensor)
    np.testing.assert_allclose(out, SCALED - [0.1, 0.2, 0.3], atol=1e-6)


def test_featurewise_without_mean_raises(as_tensor):
    with pytest.raises(ValueError, match="before its training-split mean was fitted"):
        run(get_preprocessing("featurewise"), IMAGE, as_tensor)


def test_outputs_are_float32():
    fitted = get_preprocessing("featurewise").fit(IMAGE)
    x = IMAGE.astype(np.float32)
    for variant in (get_preprocessing("rescale"), get_preprocessing("samplewise"), fitted,
                    get_preprocessing("native")):
        assert np.asarray(variant.apply(x)).dtype == np.float32, variant.name
        assert variant.apply(tf.constant(x)).dtype == tf.float32, variant.name


def test_describe_strings():
    assert get_preprocessing("rescale").describe() == "rescale: x/255"
    assert get_preprocessing("samplewise").describe() == "samplewise: x/255 -> x - mean(image)"
    assert get_preprocessing("native").describe() == "native: x (raw 0-255)"
    assert (get_preprocessing("featurewise").describe()
            == "featurewise: x/255 -> x - mean_rgb(train)")
    fitted = get_preprocessing("featurewise").fit(IMAGE)
    assert fitted.describe() == ("featurewise: x/255 -> x - mean_rgb(train) "
                                 "[mean_rgb=0.4000, 0.3000, 0.6500]")


def test_unknown_name_lists_known_with_did_you_mean():
    with pytest.raises(UserError) as info:
        get_preprocessing("samplewsie")
    message = str(info.value)
    assert "unknown preprocessing 'samplewsie'" in message
    assert "did you mean 'samplewise'?" in message
    assert "known: rescale, samplewise, featurewise, native" in message
    with pytest.raises(UserError) as info:
        get_preprocessing("zzz")
    assert "did you mean" not in str(info.value) and "known:" in str(info.value)
