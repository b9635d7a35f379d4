"""End to end: `melanoma-bench run` on a tiny generated data set, through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from melanoma.cli.main import main

VARIANTS = [{"name": "tiny_samplewise", "preprocessing": "samplewise"},
            {"name": "tiny_featurewise", "preprocessing": "featurewise"},
            {"name": "tiny_featurewise_again", "preprocessing": "featurewise",
             "note": "same config as tiny_featurewise: loaded, not trained"}]


@pytest.fixture(scope="module")
def config_text(tiny_config) -> str:
    """The tiny config with three rows (the third one's model is the second's), 2 epochs."""
    return tiny_config(variants=VARIANTS, defaults={
        "epochs": 2, "learning_rate": 1e-3, "bn_momentum": 0.5,
        "augmentation": {"rotation_deg": 10.0, "shear_deg": 0.2, "horizontal_flip": True,
                         "vertical_flip": True}})

EXPECTED_FILES = ("results.json", "results.csv", "results.md", "predictions.csv", "roc.png",
                  "histories.json")


@pytest.fixture(scope="module")
def tiny(config_text, tmp_path_factory):
    """One run of the tiny config; returns its folders and captured stderr."""
    root = tmp_path_factory.mktemp("e2e")
    config = root / "tiny.toml"
    config.write_text(config_text)
    mp = pytest.MonkeyPatch()
    mp.setenv("MELANOMA_DATA_CACHE", str(root / "cache"))
    args = ["run", "--config", str(config), "--out", str(root / "out"),
            "--models-dir", str(root / "models")]
    assert main(args) == 0
    yield {"root": root, "config": config, "out": root / "out", "models": root / "models",
           "args": args}
    mp.undo()


def test_run_writes_every_output(tiny):
    out = tiny["out"]
    for name in EXPECTED_FILES:
        assert (out / name).is_file(), name
    for variant in ("tiny_samplewise", "tiny_featurewise", "tiny_featurewise_again"):
        assert (out / f"confusion_{variant}.png").is_file()
        assert (out / f"training_{variant}.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["rows"]] == [
        "tiny_samplewise", "tiny_featurewise", "tiny_featurewise_again"]
    provenance = results["provenance"]
    for key in ("config", "seed", "versions", "git", "date", "hardware", "data"):
        assert key in provenance
    assert provenance["data"]["n_train"] + provenance["data"]["n_val"] == 20
    assert "x - mean(image)" in results["rows"][0]["spec"]
    assert "mean_rgb=" in results["rows"][1]["spec"]
    saved = sorted(p.name for p in tiny["models"].glob("*.keras"))
    assert len(saved) == 2, saved  # the third row reuses the second row's model


def test_results_equal_sklearn_on_predictions_csv(tiny):
    predictions = pd.read_csv(tiny["out"] / "predictions.csv")
    assert list(predictions.columns) == ["variant", "seed", "file", "label", "prob_malignant"]
    assert set(predictions.seed) == {7}  # one seed: the config's
    assert len(predictions) == 3 * 12
    rows = json.loads((tiny["out"] / "results.json").read_text())["rows"]
    for row in rows:
        group = predictions[predictions.variant == row["variant"]]
        y, p = group.label.to_numpy(), group.prob_malignant.to_numpy()
        assert set(group.file.str.split("/").str[1]) == {"Benign", "Malignant"}
        assert np.array_equal(y, group.file.str.contains("/Malignant/").astype(int).to_numpy())
        predicted = (p >= 0.5).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
        assert row["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-12)
        assert row["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert row["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-12)
        assert row["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert row["n_test"] == len(group)


def test_rerun_loads_models_and_reproduces_predictions(tiny, assert_same_predictions, capsys,
                                                       tmp_path):
    out2 = tmp_path / "out2"
    args = [*tiny["args"][:3], "--out", str(out2), "--models-dir", str(tiny["models"])]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "loading" in err and "training" not in err
    assert_same_predictions(out2 / "predictions.csv", tiny["out"] / "predictions.csv")


@pytest.mark.slow
def test_same_config_and_seed_retrained_gives_same_predictions(tiny, assert_same_predictions,
                                                               tmp_path):
    """Slow: a second full training of the module's run (two models, two epochs each). The
    default tier keeps the same guarantee at unit size (tests/test_training.py: a pooled
    model trains exactly like a fresh build of its seed)."""
    out2 = tmp_path / "again"
    args = [*tiny["args"][:3], "--out", str(out2), "--models-dir", str(tmp_path / "models"),
            "--retrain"]
    assert main(args) == 0
    assert_same_predictions(out2 / "predictions.csv", tiny["out"] / "predictions.csv")


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.replace("learning_rate = 0.001", "learning_rate = -1.0"), "learning_rate"),
    (lambda c: c.replace("batch_size = 8\nval", "batch_size = 0\nval"), "batch_size"),
    (lambda c: c.replace("image_size = 32", "image_size = 16"), "must be in [32, 2048]"),
    (lambda c: c.replace('preprocessing = "samplewise"', 'preprocessing = "samplewize"'),
     "did you mean 'samplewise'"),
    (lambda c: c.replace("epochs = 2", "epocs = 2"), "did you mean 'epochs'"),
    (lambda c: c + "\n[[[broken", "not valid"),
])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(config_text, tmp_path, capsys, mutate,
                                                          message):
    config = tmp_path / "bad.toml"
    assert mutate(config_text) != config_text  # the mutation found its line
    config.write_text(mutate(config_text))
    out = tmp_path / "out"
    code = main(["run", "--config", str(config), "--out", str(out),
                 "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists() and not (tmp_path / "models").exists()


def _write_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40, 40), (200, 150, 120 + i)).save(folder / f"{i}.jpg")


@pytest.mark.parametrize("build, message", [
    (lambda root: _write_images(root / "train" / "Benign", 2), "no test/"),
    (lambda root: (_write_images(root / "train" / "benign", 2),
                   _write_images(root / "train" / "malignant", 2),
                   _write_images(root / "test" / "benign", 2)), "no Malignant/"),
    (lambda root: (_write_images(root / "train" / "benign", 2),
                   _write_images(root / "train" / "malignant", 2),
                   _write_images(root / "test" / "benign", 2),
                   (root / "test" / "malignant").mkdir()), "holds no image files"),
])
def test_bad_data_dir_is_one_line_exit_2(config_text, tmp_path, capsys, build, message):
    root = tmp_path / "data"
    root.mkdir()
    build(root)
    config = tmp_path / "c.toml"
    config.write_text(config_text)
    out = tmp_path / "out"
    code = main(["run", "--config", str(config), "--data-dir", str(root), "--out", str(out),
                 "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and err[-1].startswith("melanoma-bench: error:")
    assert not out.exists()


def test_unknown_variant_lists_known(config_text, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(config_text)
    code = main(["run", "--config", str(config), "--variant", "tiny_samplewize",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'tiny_samplewise'" in err and "tiny_featurewise_again" in err
