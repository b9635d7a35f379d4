"""Loading existing models: TF 2.15 fixtures reproduce TF 2.15's own predictions, safely.

The fixtures in tests/fixtures/legacy/ were made with a real TensorFlow 2.15.1
(see make_fixtures.py); expected_predictions.csv is what its flow_from_directory
pipeline predicted on the same JPEG files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma.data.legacy import batches as legacy_batches
from melanoma.data.legacy import fit as legacy_fit
from melanoma.data.preprocessing import get_preprocessing
from melanoma.models import loading
from melanoma.runs.model_files import (
    EvalData,
    EvalOptions,
    evaluate_file,
    name_convention,
    parse_mean,
)
from melanoma.util.errors import UserError

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
FIXTURES = json.loads((LEGACY / "fixtures.json").read_text())
RECORDED_MEAN = tuple(FIXTURES["featurewise_mean"])
TOLERANCE = 1e-5  # the bar; measured: at most ~1.2e-7


@pytest.fixture(scope="module")
def data():
    return EvalData.from_dir(LEGACY / "images")


def expected(model: str) -> pd.Series:
    table = pd.read_csv(LEGACY / "expected_predictions.csv")
    rows = table[table.model == model]
    return pd.Series(rows.prob_malignant.to_numpy(), index=rows.file.to_numpy())


@pytest.mark.parametrize("model, options", [
    ("tiny_efficientnet_samplewise.h5", EvalOptions()),
    ("tiny_efficientnet_featurewise.h5", EvalOptions(featurewise_mean=RECORDED_MEAN)),
    ("tiny_efficientnet_featurewise.h5", EvalOptions()),  # mean computed from train/
    ("tiny_sigmoid_samplewise.h5", EvalOptions()),
    ("tiny_savedmodel", EvalOptions(variant="samplewise", trust_code=True)),
    ("lambda_layer.h5", EvalOptions(variant="samplewise", trust_code=True)),
])
def test_tf215_fixture_predictions_match_tf215_pipeline(data, model, options):
    result = evaluate_file(LEGACY / model, data, options)
    ours = pd.Series(result.predictions.prob_malignant.to_numpy(),
                     index=result.predictions.file.str.removeprefix("test/").to_numpy())
    reference = expected(model)
    assert list(ours.index) == list(reference.index)
    difference = np.abs(ours - reference).max()
    assert difference <= TOLERANCE, difference
    assert result.spec["decoder"] == "PIL" and result.spec["resize"] == "nearest to 32x32"
    assert "ImageDataGenerator" in result.spec["pipeline"]


def test_preprocessing_source_is_said(data):
    by_name = evaluate_file(LEGACY / "tiny_efficientnet_featurewise.h5", data)
    assert by_name.spec["preprocessing_source"] == "file name convention (*featurewise*)"
    assert "train/ split" in by_name.spec["featurewise_mean_source"]
    given = evaluate_file(LEGACY / "tiny_efficientnet_featurewise.h5", data,
                          EvalOptions(variant="featurewise", featurewise_mean=RECORDED_MEAN))
    assert given.spec["preprocessing_source"] == "--variant"
    assert given.spec["featurewise_mean_source"] == "--featurewise-mean"


def test_mean_from_train_split_equals_recorded_mean(data):
    train = data.images("train", 32, "nearest")
    fitted, how = legacy_fit(train.pixels, get_preprocessing("featurewise"))
    assert np.array_equal(np.float32(fitted.mean), np.float32(RECORDED_MEAN)), fitted.mean
    assert "ImageDataGenerator.fit" in how


def test_legacy_arithmetic_equals_tf215_inputs(data):
    test = data.images("test", 32, "nearest")
    stored = np.load(LEGACY / "preprocessed_inputs.npz")
    for name, mean in (("samplewise", None), ("featurewise", RECORDED_MEAN)):
        ours = np.concatenate(list(legacy_batches(test.pixels, get_preprocessing(name, mean), 5)))
        assert np.array_equal(ours, stored[name]), name


def test_file_name_convention():
    assert name_convention(Path("efficient_net_b6_samplewise_40.h5")) == "samplewise"
    assert name_convention(Path("efficient_net_b6_random_featurewise.h5")) == "featurewise"
    assert name_convention(Path("model.h5")) is None


def test_no_preprocessing_source_asks_for_variant(data):
    with pytest.raises(UserError, match="pass --variant NAME"):
        evaluate_file(LEGACY / "lambda_layer.h5", data, EvalOptions(trust_code=True))


def test_featurewise_without_mean_or_train_split_says_what_is_needed():
    test_only = EvalData.from_dir(LEGACY / "images" / "test")
    assert test_only.train is None
    with pytest.raises(UserError, match="--featurewise-mean R,G,B"):
        evaluate_file(LEGACY / "tiny_efficientnet_featurewise.h5", test_only)


def test_lambda_layer_refused_by_default():
    with pytest.raises(UserError) as refused:
        loading.load(LEGACY / "lambda_layer.h5")
    message = str(refused.value)
    assert "refused" in message and "Lambda layer 'lambda'" in message
    assert "--trust-model-code" in message and "\n" not in message
    assert loading.load(LEGACY / "lambda_layer.h5", trust_code=True).output == "softmax2"


def test_savedmodel_refused_by_default_and_served_with_the_flag():
    with pytest.raises(UserError, match="TensorFlow program"):
        loading.load(LEGACY / "tiny_savedmodel")
    loaded = loading.load(LEGACY / "tiny_savedmodel", trust_code=True)
    assert (loaded.format, loaded.image_size, loaded.output) == ("savedmodel", 32, "softmax2")


def test_formats_and_outputs_are_read_from_the_files():
    samplewise = loading.load(LEGACY / "tiny_efficientnet_samplewise.h5")
    sigmoid = loading.load(LEGACY / "tiny_sigmoid_samplewise.h5")
    assert samplewise.format.startswith("h5") and samplewise.image_size == 32
    assert (samplewise.output, sigmoid.output) == ("softmax2", "sigmoid1")


def _save(tmp_path: Path, name: str, input_shape, units: int, activation: str) -> Path:
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))
    path = tmp_path / name
    model.save(path)
    return path


BAD_FILES = {
    "missing": (lambda tmp: tmp / "nope.h5", "no such file"),
    "empty": (lambda tmp: _write(tmp / "empty.h5", b""), "empty"),
    "random bytes": (lambda tmp: _write(tmp / "noise.keras", bytes(range(256)) * 8),
                     "not a model file"),
    "truncated h5": (lambda tmp: _truncate(LEGACY / "tiny_efficientnet_samplewise.h5",
                                           tmp / "cut.h5"), "truncated or corrupt HDF5"),
    "not a model": (lambda tmp: LEGACY / "fixtures.json", "not a model file"),
    "not a savedmodel": (lambda tmp: LEGACY / "images", "not a TensorFlow SavedModel"),
    "wrong output": (lambda tmp: _save(tmp, "ten.keras", (32, 32, 3), 10, "softmax"),
                     "output shape (None, 10)"),
    "logits": (lambda tmp: _save(tmp, "logits.keras", (32, 32, 3), 2, "linear"),
               "'linear' activation"),
    "no input size": (lambda tmp: _save(tmp, "any.keras", (None, None, 3), 2, "softmax"),
                      "cannot read the input size"),
}


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _truncate(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[:5000])
    return target


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_one_line_user_errors(tmp_path, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(UserError) as error:
        loading.load(path)
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text, text


def test_truncated_keras_archive(tmp_path):
    good = _save(tmp_path, "good.keras", (32, 32, 3), 2, "softmax")
    cut = _truncate(good, tmp_path / "cut.keras")
    with pytest.raises(UserError, match="truncated or corrupt .keras"):
        loading.load(cut)


def test_parse_mean():
    assert parse_mean("0.8,0.6,0.5") == (0.8, 0.6, 0.5)
    for bad in ("0.8,0.6", "a,b,c", "1,2,nan"):
        with pytest.raises(UserError, match="three numbers"):
            parse_mean(bad)
