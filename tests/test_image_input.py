"""The model's input layer (melanoma/models/image_input.py): uint8 -> float32 -> random warp
(training only) -> preprocessing, in Keras ops; the same warp on TensorFlow and JAX; the
layer saved and loaded safely; one seeded draw per image, replayable."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from melanoma.data.augmentation import (
    Augmentation,
    affine_matrices,
    random_matrices,
    transform_matrices,
    warp,
)
from melanoma.data.preprocessing import get_preprocessing
from melanoma.models.image_input import (
    ImageInput,
    configure,
    for_inference,
    network_of,
    with_image_input,
)

WILD = Augmentation(rotation_deg=40.0, shear_deg=20.0, horizontal_flip=True, vertical_flip=True)


def _pixels(shape, seed=1):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _layer(augmentation, preprocessing, seed=7):
    layer = ImageInput(augmentation.active, seed)
    layer.configure(augmentation, preprocessing)
    return layer


@pytest.mark.parametrize("name", ["samplewise", "featurewise", "native", "rescale"])
def test_layer_is_the_transform_then_the_preprocessing(name):
    import keras

    prep = get_preprocessing(name, (0.4, 0.5, 0.6) if name == "featurewise" else None)
    pixels = _pixels((6, 24, 24, 3))
    layer = _layer(WILD, prep)
    plain = np.asarray(prep.apply(pixels.astype(np.float32)))
    np.testing.assert_array_equal(np.asarray(layer(pixels, training=False)), plain)

    seeds = keras.random.SeedGenerator(7)  # the draws the layer makes, replayed
    for _ in range(2):
        matrices = transform_matrices(WILD, 6, 24, 24, seeds)
        expected = np.asarray(prep.apply(warp(pixels.astype(np.float32), matrices)))
        got = np.asarray(layer(pixels, training=True))
        assert np.abs(got - plain).max() > 1e-2  # the draw really moves pixels
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_flip_only_layer_gives_each_image_flipped_or_not():
    pixels = _pixels((16, 8, 8, 3), seed=2)
    got = np.asarray(_layer(Augmentation(horizontal_flip=True), get_preprocessing("native"),
                            seed=0)(pixels, training=True))
    kept = [np.array_equal(g, p) for g, p in zip(got, pixels.astype(np.float32))]
    flipped = [np.array_equal(g, p[:, ::-1]) for g, p in zip(got, pixels.astype(np.float32))]
    assert all(k or f for k, f in zip(kept, flipped))
    assert any(kept) and any(flipped)


def test_ranges_are_variables_so_variants_share_a_model():
    """configure() changes what an existing model does (the pool's traced model serves
    every preprocessing and range); a layer built without warping refuses augmentation."""
    import keras

    network = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])
    model = with_image_input(network, WILD, get_preprocessing("native"))
    pixels = _pixels((3, 8, 8, 3))
    configure(model, Augmentation(), get_preprocessing("rescale"))
    np.testing.assert_allclose(np.asarray(model(pixels, training=True)),
                               pixels.reshape(3, -1) / np.float32(255), rtol=1e-6)
    assert network_of(model) is network and network_of(network) is network
    plain = ImageInput(augment=False)
    with pytest.raises(ValueError, match="built without augmentation"):
        plain.configure(WILD, get_preprocessing("native"))
    with pytest.raises(ValueError, match="before its training-split mean was fitted"):
        plain.configure(Augmentation(), get_preprocessing("featurewise"))


def test_inference_model_feeds_a_float_network_uint8_and_saves_safely(tmp_path):
    """A bare network (as saved, or a legacy file) predicts uint8 batches through the layer;
    a model holding the layer round-trips through a .keras file with safe_mode on."""
    import keras

    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                keras.layers.Dense(2, activation="softmax")])
    prep = get_preprocessing("samplewise")
    pixels = _pixels((5, 8, 8, 3))
    model = for_inference(network, prep)
    want = network.predict(np.asarray(prep.apply(pixels.astype(np.float32))), verbose=0)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), want, atol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), want, atol=1e-6)


JAX_WARP = """
import sys, numpy as np, keras
from melanoma.data.augmentation import affine_matrices, warp
x, theta, shear, rows, cols = (np.load(sys.argv[1])[k] for k in ("x", "t", "s", "r", "c"))
m = affine_matrices(theta, shear, rows, cols, x.shape[1], x.shape[2])
np.save(sys.argv[2], np.asarray(warp(x, m)))
print(keras.backend.backend())
"""


def test_the_warp_is_the_same_on_jax_as_on_tensorflow(tmp_path):
    """Every backend warps alike: JAX (``map_coordinates``) vs TensorFlow
    (``ImageProjectiveTransformV3``) on wild draws, within 1e-3 of the [0, 255] range."""
    rng = np.random.default_rng(3)
    n = 8
    inputs = {"x": _pixels((n, 17, 29, 3)).astype(np.float32),
              "t": rng.uniform(-0.7, 0.7, n).astype(np.float32),
              "s": rng.uniform(-0.35, 0.35, n).astype(np.float32),
              "r": rng.choice([-1.0, 1.0], n).astype(np.float32),
              "c": rng.choice([-1.0, 1.0], n).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    done = subprocess.run([sys.executable, "-c", JAX_WARP, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "KERAS_BACKEND": "jax"})
    if done.returncode and "No module named 'jax'" in done.stderr:
        pytest.skip("JAX is not installed")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("jax")
    m = affine_matrices(inputs["t"], inputs["s"], inputs["r"], inputs["c"], 17, 29)
    here = np.asarray(warp(inputs["x"], m))
    assert np.abs(here - inputs["x"]).max() > 50
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), here, atol=1e-3)


def test_draws_are_seeded_per_layer():
    import keras

    a = random_matrices(4, 8, 8, 0.5, 0.1, 1.0, 1.0, keras.random.SeedGenerator(3))
    b = random_matrices(4, 8, 8, 0.5, 0.1, 1.0, 1.0, keras.random.SeedGenerator(3))
    c = random_matrices(4, 8, 8, 0.5, 0.1, 1.0, 1.0, keras.random.SeedGenerator(4))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_an_old_config_with_augment_on_loads_with_a_note(caplog):
    """The key placed the warp in tf.data or the model; both are gone: accepted, ignored,
    said once, and it no longer changes the model key. A wrong value is still an error."""
    from melanoma import config
    from melanoma.util.errors import UserError

    def variant(**keys):
        return config.from_dict({"name": "k", "variants": [{"name": "a", **keys}]}).variants[0]

    plain = variant()
    with caplog.at_level("WARNING"):
        old = variant(augment_on="device")
    assert "augment_on = 'device' is ignored" in caplog.text
    assert old.model_key("d", 1, 0.15, "nearest") == plain.model_key("d", 1, 0.15, "nearest")
    with pytest.raises(UserError, match="augment_on must be one of"):
        variant(augment_on="gpu")
