"""`melanoma-bench evaluate` through the CLI: round trip with `run`, bad inputs, config rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from melanoma.cli.main import main
from melanoma.reporting.saved import read_predictions

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory):
    """One `run` of a one-variant tiny config; returns its folders."""
    root = tmp_path_factory.mktemp("roundtrip")
    config = root / "tiny.toml"
    config.write_text(tiny_config("tiny_eval", [{"name": "tiny_featurewise", "preprocessing": "featurewise"}],
                                  defaults={"learning_rate": 1e-3, "val_batch_size": 4,
                                            "bn_momentum": 0.5}))
    mp = pytest.MonkeyPatch()
    mp.setenv("MELANOMA_DATA_CACHE", str(root / "cache"))
    assert main(["run", "--config", str(config), "--out", str(root / "out"),
                 "--models-dir", str(root / "models")]) == 0
    data_dir = Path(json.loads((root / "out" / "results.json").read_text())
                    ["provenance"]["data"]["root"])
    (model,) = sorted((root / "models").glob("*.keras"))
    yield {"root": root, "out": root / "out", "model": model, "data": data_dir}
    mp.undo()


def test_round_trip_gives_the_same_predictions(trained, assert_same_predictions, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained["model"]), "--data-dir", str(trained["data"]),
                 "--out", str(out)]) == 0
    assert_same_predictions(out / "predictions.csv", trained["out"] / "predictions.csv")
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["variant"] == "tiny_featurewise"  # the sidecar's variant name
    assert row["preprocessing_source"].startswith("sidecar")
    assert row["featurewise_mean_source"] == "sidecar"
    for name in ("results.csv", "results.md", "roc.png", "confusion_tiny_featurewise.png"):
        assert (out / name).is_file(), name


def test_run_config_rows_can_name_model_files(trained, tmp_path):
    config = tmp_path / "files.toml"
    legacy = LEGACY / "tiny_efficientnet_samplewise.h5"
    config.write_text(f"""
name = "from_files"
seed = 7
[[variants]]
name = "tiny_featurewise"
model_file = "{trained['model']}"
[[variants]]
name = "legacy_samplewise"
model_file = "{legacy}"
val_batch_size = 4
""")
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--data-dir", str(trained["data"]),
                 "--out", str(out), "--models-dir", str(tmp_path / "models")]) == 0
    predictions = read_predictions(out / "predictions.csv")
    before = read_predictions(trained["out"] / "predictions.csv")
    again = predictions[predictions.variant == "tiny_featurewise"].reset_index(drop=True)
    keys = [c for c in before.columns if c != "prob_malignant"]
    assert again[keys].equals(before[keys])  # the model's rows; its probabilities within 1e-6:
    np.testing.assert_allclose(again["prob_malignant"], before["prob_malignant"], rtol=0,
                               atol=1e-6)  # one model, two code paths (conftest's PROB_ATOL)
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["legacy_samplewise"]["preprocessing_source"] == "file name convention (*samplewise*)"
    assert not (tmp_path / "models").exists()  # nothing was trained


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    import keras

    truncated = tmp_path / "truncated_samplewise.h5"
    truncated.write_bytes((LEGACY / "tiny_efficientnet_samplewise.h5").read_bytes()[:4000])
    inputs = keras.Input((32, 32, 3))
    wrong = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    wrong.save(tmp_path / "five_samplewise.keras")
    return {"missing": tmp_path / "missing_samplewise.h5", "truncated": truncated,
            "not a model": LEGACY / "fixtures.json",
            "wrong output": tmp_path / "five_samplewise.keras",
            "lambda": LEGACY / "lambda_layer.h5"}


def test_bad_models_one_line_each_others_still_reported(tmp_path, capsys):
    bad = _bad_inputs(tmp_path)
    good = LEGACY / "tiny_efficientnet_samplewise.h5"
    out = tmp_path / "out"
    code = main(["evaluate", str(bad["missing"]), str(good), *(str(p) for p in
                 list(bad.values())[1:]), "--data-dir", str(LEGACY / "images"),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("melanoma-bench: error:")]
    assert len(errors) == len(bad), errors
    for path, line in zip(bad.values(), errors):
        assert str(path) in line
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["rows"]] == ["tiny_efficientnet_samplewise"]
    assert len(results["provenance"]["failed_models"]) == len(bad)
    assert "Lambda layer 'lambda'" in errors[-1] and "--trust-model-code" in errors[-1]


def test_all_models_failing_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["evaluate", str(tmp_path / "nope.h5"), "--data-dir", str(LEGACY / "images"),
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "no such file" in capsys.readouterr().err


def test_class_folder_dir_is_evaluated_itself(tmp_path):
    out = tmp_path / "out"
    assert main(["evaluate", str(LEGACY / "tiny_sigmoid_samplewise.h5"), "--data-dir",
                 str(LEGACY / "images" / "test"), "--name", "sig", "--out", str(out)]) == 0
    predictions = read_predictions(out / "predictions.csv")
    assert set(predictions.variant) == {"sig"} and len(predictions) == 12
    assert predictions.file.iloc[0] == "Benign/b_000.jpg"


def test_lambda_loads_with_the_flag(tmp_path):
    assert main(["evaluate", str(LEGACY / "lambda_layer.h5"), "--variant", "samplewise",
                 "--trust-model-code", "--data-dir", str(LEGACY / "images"),
                 "--out", str(tmp_path / "out")]) == 0


def test_run_config_with_missing_model_file_fails_before_work(tmp_path, capsys):
    config = tmp_path / "missing.toml"
    config.write_text(f'name = "m"\n[[variants]]\nname = "gone"\n'
                      f'model_file = "{tmp_path / "gone_samplewise.h5"}"\n')
    out = tmp_path / "out"
    code = main(["run", "--config", str(config), "--data-dir", str(LEGACY / "images"),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no such file" in err[-1] and not out.exists()


def test_evaluate_draws_grad_cam_from_the_model_files_it_was_given(tmp_path):
    """The galleries of an evaluate report get overlays from the evaluated file itself (its
    last block is 16 x 16 at 32 px: fine enough to localise); a changed file gets none."""
    model = tmp_path / "m.h5"
    model.write_bytes((LEGACY / "tiny_efficientnet_samplewise.h5").read_bytes())
    out = tmp_path / "out"
    assert main(["evaluate", str(model), "--data-dir", str(LEGACY / "images"), "--variant",
                 "samplewise", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert page.count('alt="Grad-CAM: ') >= 1 and "from the saved models of: m." in page
    model.write_bytes(model.read_bytes() + b"\0")  # the file changed since it was evaluated
    assert main(["report", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert 'alt="Grad-CAM: ' not in page and "changed since it was evaluated" in page
