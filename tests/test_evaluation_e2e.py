"""`run` with TTA and the audit on a tiny generated set, then `report` rebuilds it identically.

Marked slow (``pytest -m slow``); tests/test_report.py checks the same on generated predictions.
"""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from melanoma.cli.main import main
from melanoma.reporting.figures import slug

pytestmark = pytest.mark.slow  # trains one tiny model (~1.5 min on 2 shared cores)



@pytest.fixture(scope="module")
def tiny_run(tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_e2e")
    (root / "c.toml").write_text(tiny_config(
        "tiny_eval", seed=5, defaults={"bn_momentum": 0.5, "augmentation": {"horizontal_flip": True}},
        evaluation={"bootstrap_resamples": 200, "tta": True}))
    mp = pytest.MonkeyPatch()
    mp.setenv("MELANOMA_DATA_CACHE", str(root / "cache"))
    assert main(["run", "--config", str(root / "c.toml"), "--out", str(root / "out"),
                 "--models-dir", str(root / "models")]) == 0
    data = next((root / "cache").glob("synthetic-*"))
    yield root / "out", data
    mp.undo()


def test_run_saves_val_predictions_tta_rows_and_audit(tiny_run):
    out, _ = tiny_run
    test = pd.read_csv(out / "predictions.csv")
    val = pd.read_csv(out / "val_predictions.csv")
    assert list(test.columns) == list(val.columns) == ["variant", "seed", "file", "label",
                                                       "prob_malignant"]
    assert list(test.variant.unique()) == list(val.variant.unique()) == ["tiny", "tiny+tta"]
    assert len(val) == 2 * 3 and len(test) == 2 * 12  # 15% of 20 train images; 12 test
    assert val.file.str.startswith("train/").all() and test.file.str.startswith("test/").all()
    saved = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == ["tiny", "tiny+tta"]
    some_leak = saved["audit"]["n_test_clean"] < saved["audit"]["n_test"]  # else no repeat
    assert [r["test_set"] for r in saved["clean_rows"]] == ["clean", "clean"] * some_leak
    assert "TTA" in saved["rows"][1]["spec"]
    assert saved["evaluation"]["bootstrap_resamples"] == 200
    assert saved["audit"]["n_test"] == 12
    for name in ("audit_pairs.csv", "audit_summary.json", "audit_pairs.png", "clean_test.csv",
                 "index.html", "forest_auc.png", f"reliability_{slug('tiny+tta')}.png"):
        assert (out / name).is_file(), name


def test_report_rebuilds_the_run_identically(tiny_run, tmp_path):
    out, _ = tiny_run
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    for name in ("results.json", "results.csv", "results.md", "index.html"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_audit_command_finds_a_planted_copy(tiny_run, tmp_path, capsys):
    _, data = tiny_run
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    train_file = sorted((copy / "train" / "Benign").glob("*.jpg"))[0]
    shutil.copy(train_file, copy / "test" / "Benign" / "leaked.jpg")
    assert main(["audit", str(copy), "--out", str(tmp_path / "audit")]) == 0
    summary = json.loads((tmp_path / "audit" / "audit_summary.json").read_text())
    assert summary["test_with_exact_duplicate_in_train"] + summary["test_with_duplicate_in_val"] >= 1
    assert summary["n_by_split"]["val"] > 0  # the runner's split, not a val/ folder
    assert "n_test_clean" in capsys.readouterr().out
