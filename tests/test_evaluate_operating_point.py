"""`melanoma-bench evaluate`: an operating point from --val-dir (chosen as run chooses it) or
--threshold, a data root with only test/, and reruns that write identical results.json."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from melanoma.cli.main import main
from melanoma.evaluation.rows import EvalSettings, choose_threshold
from melanoma.reporting.saved import read_predictions

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
SAMPLEWISE = LEGACY / "tiny_efficientnet_samplewise.h5"
FEATUREWISE = LEGACY / "tiny_efficientnet_featurewise.h5"


def confusion_at(y: np.ndarray, p: np.ndarray, t: float) -> dict[str, float]:
    """Sensitivity, specificity and accuracy at ``p >= t``, written out by hand."""
    call = p >= t
    return {"sensitivity": float(np.mean(call[y == 1])), "specificity": float(np.mean(~call[y == 0])),
            "accuracy": float(np.mean(call == (y == 1)))}


def evaluate(tmp_path: Path, *extra: str, model: Path = SAMPLEWISE, data: Path = LEGACY / "images",
             out: str = "out") -> tuple[int, Path]:
    code = main(["evaluate", str(model), "--data-dir", str(data), "--out", str(tmp_path / out),
                 *extra])
    return code, tmp_path / out


def test_val_dir_chooses_the_threshold_as_run_does(tmp_path):
    code, out = evaluate(tmp_path, "--val-dir", str(LEGACY / "images" / "train"))
    assert code == 0
    val = read_predictions(out / "val_predictions.csv")
    test = read_predictions(out / "predictions.csv")
    assert len(val) == 12 and val["file"].str.startswith("train/").all()
    y_val, p_val = val["label"].to_numpy(), val["prob_malignant"].to_numpy()
    want, reason = choose_threshold(y_val, p_val, EvalSettings())
    assert reason == ""
    # Youden's J by brute force over the candidate thresholds (the validation probabilities)
    j = [confusion_at(y_val, p_val, t)["sensitivity"] + confusion_at(y_val, p_val, t)["specificity"]
         for t in p_val]
    assert max(j) == pytest.approx(confusion_at(y_val, p_val, want)["sensitivity"]
                                   + confusion_at(y_val, p_val, want)["specificity"])
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["threshold"] == pytest.approx(want) and row["threshold_rule"] == "Youden's J on validation"
    at = confusion_at(test["label"].to_numpy(), test["prob_malignant"].to_numpy(), want)
    for name, value in at.items():
        assert row[f"thr_{name}"] == pytest.approx(value)
    assert json.loads((out / "results.json").read_text())["provenance"]["data"]["n_val"] == 12


def test_given_threshold(tmp_path):
    code, out = evaluate(tmp_path, "--threshold", "0.3")
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    row = saved["rows"][0]
    assert row["threshold"] == 0.3 and row["threshold_rule"] == "given threshold 0.3"
    assert saved["evaluation"]["threshold"] == 0.3
    test = read_predictions(out / "predictions.csv")
    at = confusion_at(test["label"].to_numpy(), test["prob_malignant"].to_numpy(), 0.3)
    for name, value in at.items():
        assert row[f"thr_{name}"] == pytest.approx(value)
    assert "p >= 0.3, the threshold given" in (out / "results.md").read_text()
    assert not (out / "val_predictions.csv").exists()
    # `report` rebuilds the same tables from the saved settings
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.json").read_bytes() == (out / "results.json").read_bytes()


def test_without_either_there_is_no_operating_point(tmp_path):
    code, out = evaluate(tmp_path)
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert code == 0 and row["threshold"] is None and row["thr_sensitivity"] is None
    assert "no validation predictions saved" in row["undefined"]


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "1.5"], "--threshold must be a probability in [0, 1]"),
    (["--threshold", "nan"], "--threshold must be a probability in [0, 1]"),
    (["--threshold", "0.5", "--val-dir", str(LEGACY / "images" / "train")], "not both"),
    (["--val-dir", str(LEGACY / "images")], "must hold Benign/ and Malignant/"),
])
def test_operating_point_errors(tmp_path, capsys, extra, message):
    code, out = evaluate(tmp_path, *extra)
    assert code == 2 and message in capsys.readouterr().err and not out.exists()


def test_a_root_with_only_test_works_unless_a_mean_is_needed(tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(LEGACY / "images" / "test", root / "test")
    code, out = evaluate(tmp_path, data=root)
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["provenance"]["data"]["n_train"] is None and saved["rows"][0]["n_test"] == 12
    assert read_predictions(out / "predictions.csv")["file"].str.startswith("test/").all()
    # a featurewise model without a stored mean needs train/ (or --featurewise-mean)
    code, _ = evaluate(tmp_path, model=FEATUREWISE, data=root, out="fw")
    assert code == 2 and "--featurewise-mean" in capsys.readouterr().err
    mean = json.loads((LEGACY / "fixtures.json").read_text())["featurewise_mean"]
    code, _ = evaluate(tmp_path, "--featurewise-mean", ",".join(map(str, mean)), model=FEATUREWISE,
                       data=root, out="fw2")
    assert code == 0


VOLATILE = ("date", "wall_seconds")  # provenance fields that differ between two runs


def test_evaluate_twice_writes_identical_results(tmp_path):
    """The bootstrap is seeded (--seed, default 0) and prediction deterministic: a rerun on the
    same inputs writes the same results.json except the provenance's date and wall time."""
    args = ("--val-dir", str(LEGACY / "images" / "train"))
    saved = []
    for _ in range(2):
        code, out = evaluate(tmp_path, *args)
        assert code == 0
        saved.append(((out / "results.json").read_text(), (out / "predictions.csv").read_bytes()))
    (first, preds_1), (second, preds_2) = saved
    assert preds_1 == preds_2
    a, b = json.loads(first), json.loads(second)
    assert a["evaluation"]["seed"] == 0 and a["rows"][0]["auc_ci_low"] is not None
    for key in VOLATILE:
        a["provenance"].pop(key)
        b["provenance"].pop(key)
    assert a == b
    # and another seed moves the bootstrap intervals, not the point estimates
    code, out = evaluate(tmp_path, *args, "--seed", "1", out="seed1")
    c = json.loads((out / "results.json").read_text())["rows"][0]
    assert code == 0 and c["auc"] == a["rows"][0]["auc"]
    intervals = lambda row: {k: v for k, v in row.items() if "_ci_" in k}  # noqa: E731
    assert intervals(c) != intervals(a["rows"][0])
