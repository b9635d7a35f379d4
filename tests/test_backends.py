"""The same work on every Keras backend: TensorFlow in this process, JAX in a subprocess
(``KERAS_BACKEND=jax``; the test venv has both). Evaluation of legacy .h5 and .keras files
gives the same probabilities (<= 1e-5), Grad-CAM the same maps, and JAX's GPU features
(mixed precision, XLA, DataParallel over two forced host devices) train a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from melanoma.runs.model_files import EvalData, EvalOptions, evaluate_file

ROOT = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).parent / "fixtures" / "legacy"
TOLERANCE = 1e-5
RECORDED_MEAN = tuple(json.loads((LEGACY / "fixtures.json").read_text())["featurewise_mean"])

pytestmark = pytest.mark.skipif(pytest.importorskip("jax") is None, reason="needs jax")


def run_on(backend: str, code: str, env: dict | None = None, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh interpreter with ``KERAS_BACKEND=backend``; it prints one JSON
    line last, which is returned."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT),
                   **(env or {})}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def tensorflow_here():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares a TensorFlow process with a JAX one")


def keras_file(tmp_path: Path) -> Path:
    """A .keras file (a tiny CNN saved by Keras 3 on TensorFlow) for 32x32 inputs."""
    path = tmp_path / "tiny_samplewise.keras"
    tiny_cnn().save(path)
    return path


@pytest.mark.slow  # about 2 minutes: a second process on JAX evaluates four files
def test_model_files_give_the_same_probabilities_on_jax(tmp_path):
    models = [LEGACY / "tiny_efficientnet_samplewise.h5", LEGACY / "tiny_sigmoid_samplewise.h5",
              LEGACY / "tiny_efficientnet_featurewise.h5", keras_file(tmp_path)]
    data = EvalData.from_dir(LEGACY / "images")
    options = EvalOptions(variant="featurewise", featurewise_mean=RECORDED_MEAN)
    here = {}
    for path in models:
        chosen = options if "featurewise" in path.name else EvalOptions(variant="samplewise")
        here[path.name] = evaluate_file(path, data, chosen).predictions.prob_malignant.tolist()
    there = run_on("jax", f"""
        import json, keras
        from pathlib import Path
        from melanoma.runs.model_files import EvalData, EvalOptions, evaluate_file
        data = EvalData.from_dir(Path({str(LEGACY / "images")!r}))
        featurewise = EvalOptions(variant="featurewise", featurewise_mean={RECORDED_MEAN!r})
        found = {{"backend": keras.backend.backend()}}
        for path in {[str(p) for p in models]!r}:
            chosen = (featurewise if "featurewise" in Path(path).name
                      else EvalOptions(variant="samplewise"))
            result = evaluate_file(Path(path), data, chosen)
            found[Path(path).name] = result.predictions.prob_malignant.tolist()
        print(json.dumps(found))
    """)
    assert there.pop("backend") == "jax"
    assert set(there) == set(here)
    for name, probabilities in here.items():
        assert len(probabilities) == len(data.test) and np.std(probabilities) > 1e-3, name
        difference = np.abs(np.subtract(there[name], probabilities)).max()
        assert difference <= TOLERANCE, (name, difference)


@pytest.mark.slow  # 20-30 s: a JAX interpreter starts
def test_savedmodel_on_jax_says_it_needs_tensorflow():
    found = run_on("jax", f"""
        import json
        from melanoma.models import loading
        from melanoma.util.errors import UserError
        try:
            loading.load({str(LEGACY / "tiny_savedmodel")!r}, trust_code=True)
            print(json.dumps({{"error": None}}))
        except UserError as error:
            print(json.dumps({{"error": str(error)}}))
    """)
    assert "needs TensorFlow" in found["error"] and "\n" not in found["error"]


def tiny_cnn(size: int = 32):
    """Two convolutions, global pooling and a softmax head: enough for a spatial map."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(x))


@pytest.mark.slow  # about 50 s
def test_gradcam_gives_the_same_maps_on_jax(tmp_path):
    from melanoma.explain import gradcam as gc

    model_path = tmp_path / "tiny.keras"
    tiny_cnn().save(model_path)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    import keras

    here = gc.gradcam(keras.saving.load_model(model_path), pixels, class_index=1)
    other = gc.gradcam(keras.saving.load_model(model_path), pixels, class_index=0)
    there = run_on("jax", f"""
        import json, keras, numpy as np
        from melanoma.explain import gradcam as gc
        model = keras.saving.load_model({str(model_path)!r})
        pixels = np.load({str(tmp_path / "pixels.npy")!r})
        maps = [gc.gradcam(model, pixels, class_index=c).tolist() for c in (1, 0)]
        print(json.dumps({{"backend": keras.backend.backend(), "maps": maps}}))
    """)
    assert there["backend"] == "jax"
    assert here.shape == (4, 40, 40) and here.std() > 0.05
    assert not np.allclose(here, other)  # the two classes' maps differ: a real gradient
    assert np.abs(np.asarray(there["maps"][0]) - here).max() < 1e-4
    assert np.abs(np.asarray(there["maps"][1]) - other).max() < 1e-4


@pytest.mark.slow  # about 30 s
def test_jax_data_parallel_mixed_precision_and_xla_on_two_host_devices():
    """DataParallel over two CPU devices (forced), mixed_float16 with a float32 head, jit
    (XLA): a tiny model trains two steps, its weights are replicated on both devices."""
    found = run_on("jax", """
        import json, keras, numpy as np
        from melanoma.util import backend
        strategy = backend.distribution(count=2)  # what run does with two GPUs
        assert type(strategy).__name__ == "DataParallel", strategy
        keras.config.set_dtype_policy("mixed_float16")
        with backend.scope(strategy):
            inputs = keras.Input((16, 16, 3))
            x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            out = keras.layers.Dense(2, activation="softmax", dtype="float32")(x)
            model = keras.Model(inputs, out)
            model.compile("adam", "categorical_crossentropy", jit_compile=True)
        keras.config.set_dtype_policy("float32")
        rng = np.random.default_rng(0)
        x, y = rng.random((8, 16, 16, 3), np.float32), np.eye(2, dtype=np.float32)[[0, 1] * 4]
        history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
        kernel = model.layers[1].kernel.value
        print(json.dumps({"replicas": backend.replicas(strategy),
                          "devices": len(kernel.sharding.device_set),
                          "compute_dtype": model.layers[1].compute_dtype,
                          "output_dtype": str(model.predict(x, verbose=0).dtype),
                          "loss": history.history["loss"]}))
    """, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
              "JAX_PLATFORMS": "cpu"})
    assert found["replicas"] == 2 and found["devices"] == 2
    assert found["compute_dtype"] == "float16" and found["output_dtype"] == "float32"
    assert all(np.isfinite(found["loss"]))
