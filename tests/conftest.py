"""Shared test set-up and fixtures (tests/README.md says how the suite is organised).

Environment: quiet TensorFlow, and generated data sets and decoded-image caches outside the
user's home: $MELANOMA_DATA_CACHE when set (.ci/run sets it), else a per-user folder in the
system's temporary directory, kept between sessions so generated sets are reused. Matplotlib's
font cache goes there too (else ~/.cache/matplotlib). Tests of the ~/.cache default itself
monkeypatch HOME and the variable.

Fixtures (a test asks for them by name; none of them imports TensorFlow):
- ``tiny_config``: a function that writes the tiny run config as TOML text (B0, random weights,
  32 px, one epoch, a generated 40 px data set) with per-test changes.
- ``isic2017``: the shared real ISIC 2017 folder, or skip (a failure when ``CI=true``).
- ``jpeg_bytes``, ``image_set``, ``write_images``: generated images and class folders.
- ``fake_predictions``, ``seeded_predictions``: saved-prediction tables without a model.
- ``four_job_config``: the 2 variants x 2 seeds config of the job-sharing tests.
- ``assert_same_predictions``: one model's predictions by two code paths, within 1e-6.
- ``op_determinism``: a context manager for tests whose claim is bit-for-bit equality.
- ``one_line_error``: the test's command failed with one ``melanoma-bench: error:`` line.
- ``gradcam_model``: the smallest seeded Keras model Grad-CAM reads (Keras loads on the call).
Every test runs with TensorFlow's op-determinism switch put back as it found it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
ISIC2017 = REPO.parent / "shared" / "data" / "isic2017"


def _test_cache() -> str:
    """``<tmp>/melanoma-bench-tests-<uid>``, or a fresh private folder when that name is
    taken by a link or by another user (a shared /tmp)."""
    folder = Path(tempfile.gettempdir()) / f"melanoma-bench-tests-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        ours = not folder.is_symlink() and folder.stat().st_uid == os.getuid()
    except OSError:  # e.g. a file of that name
        ours = False
    return str(folder) if ours else tempfile.mkdtemp(prefix="melanoma-bench-tests-")


if not os.environ.get("MELANOMA_DATA_CACHE"):  # an empty value means unset, as in the code
    os.environ["MELANOMA_DATA_CACHE"] = _test_cache()
os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ["MELANOMA_DATA_CACHE"], "matplotlib"))


# ---------------------------------------------------------------- the tiny run config
TINY_DEFAULTS = {"backbone": "MobileNet", "image_size": 32, "weights": "none", "epochs": 1,
                 "batch_size": 8, "val_batch_size": 8, "head_units": 8}
TINY_DATA = {"n_train_per_class": 10, "n_test_per_class": 6, "image_size": 40, "seed": 3}
SMALL_DATA = {"n_train_per_class": 8, "n_test_per_class": 4, "image_size": 40, "seed": 3}
DATA_SETS = {"tiny": TINY_DATA, "small": SMALL_DATA}  # generated sets a config can name


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml_table(name: str, table: dict, array: bool = False) -> list[str]:
    """``[name]`` (``[[name]]`` when ``array``) with its keys, then its sub-tables."""
    lines = [f"[[{name}]]" if array else f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for key, sub in table.items():
        if isinstance(sub, dict):
            lines += _toml_table(f"{name}.{key}", sub)
    return lines


def tiny_config_text(name: str = "tiny", variants=({"name": "tiny", "preprocessing": "samplewise"},),
                     *, seed: int | None = 7, synthetic: dict | str | None = "tiny",
                     defaults: dict | None = None, top: dict | None = None, **tables) -> str:
    """The tiny run config as TOML. ``defaults`` changes TINY_DEFAULTS (a None value drops a
    key); ``synthetic`` is a generated set (a DATA_SETS name or a table), None leaves the data
    to ``--data-dir``; ``top`` adds top-level keys
    (``seeds``); other keywords are tables (``evaluation={...}``, ``data={...}``)."""
    head = {"name": name, **({"seed": seed} if seed is not None else {}), **(top or {})}
    lines = [f"{k} = {_toml_value(v)}" for k, v in head.items()]
    data = dict(tables.pop("data", {}))
    if synthetic is not None:
        data["synthetic"] = DATA_SETS[synthetic] if isinstance(synthetic, str) else synthetic
    for table_name, table in (("data", data), *tables.items()):
        if table:
            lines += ["", *_toml_table(table_name, table)]
    merged = {k: v for k, v in {**TINY_DEFAULTS, **(defaults or {})}.items() if v is not None}
    lines += ["", *_toml_table("defaults", merged)]
    for variant in variants:
        lines += ["", *_toml_table("variants", variant, array=True)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(name, variants, seed=, synthetic=, defaults=, top=, **tables)`` -> TOML."""
    return tiny_config_text


@pytest.fixture(scope="session")
def four_job_config() -> str:
    """Two variants (samplewise, native) x two seeds (5, 6): four one-epoch jobs on a 16-image
    generated set, for tests of how jobs are shared, resumed and repeated."""
    return tiny_config_text(
        "shared", [{"name": "sw", "preprocessing": "samplewise"},
                   {"name": "nat", "preprocessing": "native"}], seed=5, top={"seeds": [5, 6]},
        synthetic="small", evaluation={"bootstrap_resamples": 50})


# ---------------------------------------------------------------- real data
@pytest.fixture(scope="session")
def isic2017() -> Path:
    """The shared ISIC 2017 folder (../shared/data/isic2017 from the repository root), or
    skip with the reason; in CI (CI=true), where it must be present, a missing folder fails."""
    wanted = (ISIC2017 / "train" / "Benign", ISIC2017 / "labels"
              / "ISIC-2017_Training_Part3_GroundTruth.csv")
    if not (wanted[0].is_dir() and wanted[1].is_file()):
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data expected in CI at {ISIC2017}")
        pytest.skip(f"real ISIC 2017 data not found at {ISIC2017} (only on the project's machines)")
    return ISIC2017


# ---------------------------------------------------------------- generated images
_RNG = np.random.default_rng(0)


def jpeg(mode: str = "RGB", size: int = 40) -> bytes:
    """Random pixels encoded as JPEG (PNG for RGBA, which JPEG cannot hold)."""
    from PIL import Image

    pixels = _RNG.integers(0, 255, (size, size, 4), np.uint8)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    img = Image.fromarray(pixels[..., :channels].squeeze(), mode)
    buffer = io.BytesIO()
    img.save(buffer, "PNG" if mode == "RGBA" else "JPEG")
    return buffer.getvalue()


def image_set(root: Path, n: int = 10, test_n: int = 4) -> Path:
    """``root/{train,test}/{Benign,Malignant}`` with ``n`` (train) and ``test_n`` (test)
    random 40 px JPEGs per class."""
    for split, count in (("train", n), ("test", test_n)):
        for cls in ("Benign", "Malignant"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{split}_{cls.lower()}_{i}.jpg").write_bytes(jpeg())
    return root


def write_images(root: Path, files) -> None:
    """A random 48x40 image at each relative path in ``files`` (for galleries)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for f in dict.fromkeys(files):
        path = root / f
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="session")
def jpeg_bytes():
    """``jpeg_bytes(mode="RGB", size=40)`` -> the bytes of a random image."""
    return jpeg


@pytest.fixture(scope="session", name="image_set")
def _image_set():
    """``image_set(root, n=10, test_n=4)`` -> ``root`` holding a small class-folder data set."""
    return image_set


@pytest.fixture(scope="session", name="write_images")
def _write_images():
    """``write_images(root, files)``: an image file at each path (galleries need them)."""
    return write_images


# ---------------------------------------------------------------- saved predictions
def fake_predictions(n: int, names=("a", "b", "c"), seed: int = 0, prefix: str = "test"):
    """Balanced labels and per-variant logistic scores of increasing quality."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    files = [f"{prefix}/{'Malignant' if v else 'Benign'}/{i}.jpg" for i, v in enumerate(y)]
    frames = []
    for k, name in enumerate(names):
        score = y * (0.8 + 0.5 * k) + rng.normal(0, 1, len(y))
        p = np.round(1 / (1 + np.exp(-score + 0.4)), 9)  # as saved: 9 significant digits
        frames.append(pd.DataFrame({"variant": name, "file": files, "label": y,
                                    "prob_malignant": p}))
    return pd.concat(frames, ignore_index=True)


def seeded_predictions(variants=("a", "b"), seeds=(1, 2, 3), n_pos=12, n_neg=18, spread=0.5,
                       separation=1.0, rng_seed=0, image_sd=1.0, variant_gap=0.3):
    """Seeds differ by a random shift of the class separation (SD ``spread``); each image has
    one difficulty shared by every seed and variant, plus a little per-seed noise."""
    import pandas as pd

    rng = np.random.default_rng(rng_seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    difficulty = rng.normal(0, image_sd, len(y))
    seed_effect = rng.normal(0, 1, (len(variants), len(seeds)))
    files = [f"img_{i:03d}.jpg" for i in range(len(y))]
    frames = []
    for v, variant in enumerate(variants):
        for s, seed in enumerate(seeds):
            sep = separation - v * variant_gap + spread * seed_effect[v, s]
            logit = sep * (2 * y - 1) + difficulty + rng.normal(0, 0.3, len(y))
            frames.append(pd.DataFrame({"variant": variant, "seed": seed, "file": files,
                                        "label": y, "prob_malignant": 1 / (1 + np.exp(-logit))}))
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)  # any order


@pytest.fixture(scope="session", name="fake_predictions")
def _fake_predictions():
    """``fake_predictions(n, names=("a","b","c"), seed=0, prefix="test")``: one seed's table."""
    return fake_predictions


@pytest.fixture(scope="session", name="seeded_predictions")
def _seeded_predictions():
    """``seeded_predictions(variants, seeds, ...)``: several seeds' table, seed effects shared."""
    return seeded_predictions


# A run shaped like the default one: its five names (the widest it prints) and an audit.
DEFAULT_RUN_NAMES = ("efficient_net_b0_samplewise", "efficient_net_b0_featurewise",
                     "efficient_net_b0_samplewise_long", "efficient_net_b0_random_featurewise",
                     "efficient_net_b0_native")
DEFAULT_RUN_AUDIT = {"n_items": 300, "n_by_split": {"train": 340, "val": 60, "test": 200},
                     "n_test": 200, "test_with_duplicate_in_train": 3,
                     "test_with_exact_duplicate_in_train": 1, "test_with_duplicate_in_val": 0,
                     "test_with_same_lesion_in_train_or_val": 2, "test_fraction_affected": 0.025,
                     "n_test_clean": 195, "include_flips": False, "min_corr": 0.95}


@pytest.fixture(scope="session")
def default_run_shape() -> tuple[tuple[str, ...], dict]:
    """(the default run's five variant names, an audit summary) for report-layout tests."""
    return DEFAULT_RUN_NAMES, dict(DEFAULT_RUN_AUDIT)


# ---------------------------------------------------------------- comparing code paths
PROB_ATOL = 1e-6


def assert_same_predictions(got: Path, want: Path, atol: float = PROB_ATOL) -> None:
    """Two predictions.csv files list the same rows (variant, seed, file, label) and their
    probabilities agree within ``atol``. Predictions of one model reached by two code paths
    (trained, reloaded, retrained) need not be bit-identical once ops run in another order
    (another device or kernel); 1e-6 is float32 rounding there, while another model or a
    preprocessing change moves probabilities by far more."""
    import pandas as pd

    a, b = pd.read_csv(got), pd.read_csv(want)
    keys = [c for c in a.columns if c != "prob_malignant"]
    assert list(a.columns) == list(b.columns) and a[keys].equals(b[keys])
    np.testing.assert_allclose(a["prob_malignant"], b["prob_malignant"], rtol=0, atol=atol)


@pytest.fixture(scope="session", name="assert_same_predictions")
def _assert_same_predictions():
    """``assert_same_predictions(got_csv, want_csv, atol=1e-6)``: same rows, probabilities
    within ``atol`` (for one model reached by two code paths)."""
    return assert_same_predictions


# ---------------------------------------------------------------- user errors
ERROR_PREFIX = "melanoma-bench: error:"


@pytest.fixture
def one_line_error(capsys):
    """``one_line_error(*needles)`` -> the line: what the test's command wrote to stderr since
    the last read is one ``melanoma-bench: error:`` line holding every needle, no traceback."""
    def check(*needles: str) -> str:
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
        assert len(lines) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        return lines[0]
    return check


def gradcam_model(size: int = 32):
    """A seeded few-weight classifier Grad-CAM can read: a 4-filter conv named
    ``top_activation`` (the layer it looks for), pooled, then a 2-class softmax."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((size, size, 3)),
                             keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                                                 name="top_activation"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2, activation="softmax")])


@pytest.fixture(scope="session", name="gradcam_model")
def _gradcam_model():
    """``gradcam_model(size=32)`` -> a new seeded Keras model with a ``top_activation`` conv."""
    return gradcam_model


# ---------------------------------------------------------------- TensorFlow state
def _tf_framework_config():
    """TensorFlow's own config module (the public API has no getter or off switch for op
    determinism), or None when TensorFlow is not loaded: a test never imports it for this."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import config as tf_config

    return tf_config


def _set_op_determinism(tf_config, on: bool) -> None:
    if on:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


@pytest.fixture(autouse=True)
def _restore_op_determinism():
    """Put TensorFlow's op-determinism switch back as the test found it (a CLI run, or a test
    that asks for determinism, turns it on for the whole process)."""
    before = _tf_framework_config()
    was = before.is_op_determinism_enabled() if before else False
    yield
    after = _tf_framework_config()
    if after is not None and after.is_op_determinism_enabled() != was:
        _set_op_determinism(after, was)


@pytest.fixture(scope="session")
def op_determinism():
    """``with op_determinism(): ...`` runs TensorFlow ops deterministically and restores the
    previous setting after: for tests whose claim is bit-for-bit equality on one machine."""
    @contextlib.contextmanager
    def deterministic():
        import tensorflow  # noqa: F401  (loads the framework module below)
        from tensorflow.python.framework import config as tf_config

        was = tf_config.is_op_determinism_enabled()
        tf_config.enable_op_determinism()
        try:
            yield
        finally:
            _set_op_determinism(tf_config, was)
    return deterministic
