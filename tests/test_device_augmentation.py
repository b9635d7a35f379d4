"""``augment_on = "device"``: the random warp and the preprocessing inside the trained model,
checked on the CPU (CI has no GPU): the gather warp equals TensorFlow's projective-transform
op (eager and under XLA), the layer applies the pipeline's transform and preprocessing, a
run trains and saves the bare network, and XLA compiles the whole training step."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from melanoma import config
from melanoma.cli.main import main
from melanoma.data.augmentation import (
    Augmentation,
    apply_transforms,
    transform_matrices,
    warp_with_gather,
)
from melanoma.data.preprocessing import get_preprocessing
from melanoma.util.errors import UserError
from melanoma.util.tfsetup import augment_placement

WILD = Augmentation(rotation_deg=40.0, shear_deg=20.0, horizontal_flip=True, vertical_flip=True)


def _images(rng, shape):
    return rng.integers(0, 256, shape).astype(np.float32)


@pytest.mark.parametrize("size", [(32, 32), (17, 29)])
def test_gather_warp_equals_the_tensorflow_op(size):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(_images(rng, (8, *size, 3)))
    compiled = tf.function(warp_with_gather, jit_compile=True)
    for seed in range(4):
        matrices = transform_matrices(WILD, 8, *size, tf.constant([seed, 3], tf.int64))
        reference = apply_transforms(x, matrices).numpy()
        assert np.abs(reference - x.numpy()).max() > 50  # the draw really moves pixels
        np.testing.assert_allclose(warp_with_gather(x, matrices).numpy(), reference, atol=1e-3)
        np.testing.assert_allclose(compiled(x, matrices).numpy(), reference, atol=5e-3)


@pytest.mark.parametrize("name", ["samplewise", "featurewise", "native"])
def test_layer_is_the_pipeline_transform_then_preprocessing(name):
    import keras
    import tensorflow as tf

    from melanoma.models.on_device import DeviceInput

    prep = get_preprocessing(name, (0.4, 0.5, 0.6) if name == "featurewise" else None)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (6, 24, 24, 3)).astype(np.uint8)
    layer = DeviceInput(WILD, prep, seed=7)
    plain = prep.apply(tf.constant(pixels, tf.float32)).numpy()
    np.testing.assert_allclose(layer(pixels, training=False).numpy(), plain, atol=1e-6)

    seeds = keras.random.SeedGenerator(7)  # the draws the layer makes, replayed
    for _ in range(2):
        seed = tf.cast(seeds.next(), tf.int64)
        expected = prep.apply(apply_transforms(tf.constant(pixels, tf.float32),
                                               transform_matrices(WILD, 6, 24, 24, seed)))
        got = layer(pixels, training=True).numpy()
        assert np.abs(got - plain).max() > 1e-2
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_flip_only_layer_gives_each_image_flipped_or_not():
    from melanoma.models.on_device import DeviceInput

    pixels = np.random.default_rng(2).integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    layer = DeviceInput(Augmentation(horizontal_flip=True), get_preprocessing("native"), seed=0)
    got = layer(pixels, training=True).numpy()
    kept = [np.array_equal(g, p) for g, p in zip(got, pixels.astype(np.float32))]
    flipped = [np.array_equal(g, p[:, ::-1]) for g, p in zip(got, pixels.astype(np.float32))]
    assert all(k or f for k, f in zip(kept, flipped))
    assert any(kept) and any(flipped)


def _tiny_network(size: int):
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32")(x))


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_xla_compiles_the_training_step_with_the_warp_inside(policy):
    import keras
    from tensorflow.python.framework import config as tf_config

    from melanoma.models.on_device import network_of, with_device_input
    from melanoma.models.training import compile_classifier

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    try:
        network = _tiny_network(16)
    finally:
        keras.config.set_dtype_policy("float32")
    determinism = tf_config.is_op_determinism_enabled()  # Keras turns XLA off under it, and
    tf_config.disable_op_determinism()                   # other tests in the session set it
    try:
        model = compile_classifier(with_device_input(network, WILD,
                                                     get_preprocessing("samplewise"), seed=3),
                                   1e-2, jit_compile=True)
        rng = np.random.default_rng(3)
        x = rng.integers(0, 256, (8, 16, 16, 3)).astype(np.uint8)
        y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)]
        history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    finally:
        if determinism:
            tf_config.enable_op_determinism()
    assert model.jit_compile is True
    assert np.isfinite(history.history["loss"]).all()
    assert network_of(model) is network and network_of(network) is network
    assert model.predict(x, verbose=0).dtype == np.float32


def test_run_with_device_augmentation_saves_the_bare_network(tiny_config, tmp_path, monkeypatch,
                                                             capsys):
    from melanoma.models import storage
    from melanoma.models.on_device import DeviceInput

    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "data"))
    path = tmp_path / "c.toml"
    path.write_text(tiny_config("dev_aug", [{"name": "dev", "augment_on": "device"}],
                                synthetic="small"))
    args = ["run", "--config", str(path), "--out", str(tmp_path / "out"),
            "--models-dir", str(tmp_path / "models")]
    assert main(args) == 0, capsys.readouterr().err
    assert "augmentation on the accelerator (inside the model)" in capsys.readouterr().err
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert np.isfinite(predictions["prob_malignant"]).all()
    sidecar_path = next((tmp_path / "models").glob("dev-*.json"))
    assert json.loads(sidecar_path.read_text())["augmented_on"] == "device"
    model = storage.load(storage.find(tmp_path / "models", sidecar_path.stem.split("-")[-1]))
    assert model.input.dtype == "float32"
    assert not any(isinstance(layer, DeviceInput) for layer in model.layers)
    assert main(args) == 0  # the saved model is found and loaded, not trained again
    assert "loading" in capsys.readouterr().err


def test_placement_key_and_errors():
    def variant(**keys):
        return config.from_dict({"name": "k", "variants": [{"name": "a", **keys}]}).variants[0]

    auto, host, device = variant(), variant(augment_on="pipeline"), variant(augment_on="device")
    assert len({v.model_key("d", 1, 0.15, "nearest") for v in (auto, host, device)}) == 3
    assert augment_placement("pipeline") == "pipeline" and augment_placement("device") == "device"
    assert augment_placement("auto") == "pipeline"  # no GPU here (CI has none)
    with pytest.raises(UserError, match="augment_on must be one of 'auto', 'pipeline', 'device'"):
        variant(augment_on="gpu")


MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from melanoma.data.augmentation import Augmentation
from melanoma.data.preprocessing import get_preprocessing
from melanoma.models.on_device import with_device_input
from melanoma.models.training import compile_classifier
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(2, activation="softmax")])
    model = compile_classifier(with_device_input(
        net, Augmentation(20.0, 5.0, True, True), get_preprocessing("samplewise"), 1), 1e-2)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (16, 12, 12, 3)).astype(np.uint8)
y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 16)]
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
loss = model.fit(data, epochs=2, verbose=0).history["loss"]
assert strategy.num_replicas_in_sync == 2 and np.isfinite(loss).all(), loss
print("replicas", strategy.num_replicas_in_sync, "loss", loss)
"""


def test_device_augmentation_trains_under_mirrored_strategy():
    """Two logical CPUs stand in for two GPUs: the seed generator and the warp run in each
    replica of MirroredStrategy (a wiring check; CI has no GPU)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "replicas 2" in done.stdout


def test_a_checkpoint_of_the_other_placement_is_one_clear_error(tmp_path):
    """A process with the other placement (e.g. a CPU shard after a GPU one, both "auto")
    finding a partial training state: one line, not a traceback."""
    from melanoma.models import training
    from melanoma.models.on_device import with_device_input

    network = training.compile_classifier(_tiny_network(8), 1e-3)
    network.fit(np.zeros((2, 8, 8, 3), np.float32), np.eye(2, dtype=np.float32), verbose=0)
    saver = training.EpochCheckpoint(tmp_path, {})
    saver.set_model(network)
    saver.on_epoch_end(0, {"loss": 1.0})
    other = training.compile_classifier(
        with_device_input(_tiny_network(8), WILD, get_preprocessing("native"), 0), 1e-3)
    with pytest.raises(UserError, match="a training state of another model .* --retrain"):
        training.restore_checkpoint(other, tmp_path)
    assert training.restore_checkpoint(network, tmp_path)[0] == 1
