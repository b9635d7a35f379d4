"""Evaluation tables and `melanoma-bench report` on generated predictions (no model, no TF)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from melanoma import config
from melanoma.cli.main import main
from melanoma.evaluation import metrics
from melanoma.evaluation.rows import EvalSettings, evaluate
from melanoma.reporting import run_report as report
from melanoma.reporting.saved import PREDICTION_COLUMNS, read_predictions
from melanoma.util.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RESAMPLES = 200


@pytest.fixture(scope="module")
def run_dir(fake_predictions, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    test, val = fake_predictions(120), fake_predictions(80, seed=1, prefix="train")
    clean = set(test["file"].unique()[::2])
    report.write_run(out, test, {n: {"spec": f"spec of {n}"} for n in "abc"}, {},
                     {"config": {"name": "gen"}, "seed": 3}, val,
                     EvalSettings(seed=3, bootstrap_resamples=RESAMPLES), clean,
                     {"n_test": 120, "n_test_clean": 60})
    return out


def _rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    saved = json.loads((run_dir / "results.json").read_text())
    return saved["rows"], saved["clean_rows"]


def test_run_writes_every_report_file(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    for name in ("predictions.csv", "val_predictions.csv", "clean_test.csv", "results.json",
                 "results.csv", "results.md", "index.html", "roc.png", "precision_recall.png",
                 "forest_auc.png"):
        assert name in names, name
    for v in "abc":
        for kind in ("confusion_{}.png", "confusion_{}_threshold.png", "reliability_{}.png"):
            assert kind.format(v) in names
    for name in ("predictions.csv", "val_predictions.csv"):
        assert list(pd.read_csv(run_dir / name).columns) == list(PREDICTION_COLUMNS)


def test_report_command_rebuilds_identical_tables_without_tensorflow(run_dir, tmp_path):
    out = tmp_path / "rebuilt"
    code = ("import sys; from melanoma.cli.main import main; "
            f"rc = main(['report', {str(run_dir)!r}, '--out', {str(out)!r}]); "
            "assert rc == 0; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    for name in ("results.json", "results.csv", "results.md", "index.html"):
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name
    before = (run_dir / "results.csv").read_bytes()
    (run_dir / "results.csv").unlink()
    (run_dir / "roc.png").unlink()
    assert main(["report", str(run_dir)]) == 0  # in place
    assert (run_dir / "results.csv").read_bytes() == before and (run_dir / "roc.png").is_file()


def test_report_on_a_folder_without_results_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no predictions.csv" in capsys.readouterr().err


def test_rows_match_independent_computations(run_dir):
    full, clean = _rows(run_dir)
    test = read_predictions(run_dir / "predictions.csv")
    val = read_predictions(run_dir / "val_predictions.csv")
    keep = set(pd.read_csv(run_dir / "clean_test.csv").query("clean == 1")["file"])
    for rows, subset in ((full, test), (clean, test[test["file"].isin(keep)])):
        for row in rows:
            g, v = subset[subset.variant == row["variant"]], val[val.variant == row["variant"]]
            y, p = g.label.to_numpy(), g.prob_malignant.to_numpy()
            assert row["n_test"] == len(y)
            assert row["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
            # threshold: Youden's J on validation, by brute force over candidate cut-offs
            yv, pv = v.label.to_numpy(), v.prob_malignant.to_numpy()
            j = [((pv >= t) & (yv == 1)).sum() / yv.sum() - ((pv >= t) & (yv == 0)).sum()
                 / (yv == 0).sum() for t in np.unique(pv)]
            assert max(j) == pytest.approx(
                ((pv >= row["threshold"]) & (yv == 1)).sum() / yv.sum()
                - ((pv >= row["threshold"]) & (yv == 0)).sum() / (yv == 0).sum())
            # applied unchanged to test
            tn, fp, fn, tp = confusion_matrix(y, (p >= row["threshold"]).astype(int)).ravel()
            assert row["thr_sensitivity"] == pytest.approx(tp / (tp + fn))
            assert row["thr_specificity"] == pytest.approx(tn / (tn + fp))
            tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int)).ravel()
            assert row["accuracy"] == pytest.approx((tp + tn) / len(y))
            ci = metrics.bootstrap_ci(y, p, ["auc", "ece"], RESAMPLES, seed=3)
            assert (row["auc_ci_low"], row["auc_ci_high"]) == pytest.approx(ci["auc"])
            assert (row["ece_ci_low"], row["ece_ci_high"]) == pytest.approx(ci["ece"])
            assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
        best = max(rows, key=lambda r: r["auc"])
        for row in rows:
            assert row["delong_reference"] == best["variant"]
            if row is best:
                assert row["auc_delong_p"] is None  # NaN in JSON: no test against itself
            else:
                g = subset[subset.variant == row["variant"]]
                gb = subset[subset.variant == best["variant"]]
                want = metrics.delong_test(g.label.to_numpy(), g.prob_malignant.to_numpy(),
                                           gb.prob_malignant.to_numpy())[3]
                assert row["auc_delong_p"] == pytest.approx(want)


def test_target_sensitivity_threshold(fake_predictions):
    test, val = fake_predictions(100), fake_predictions(60, seed=2)
    rows = evaluate(test, val, EvalSettings(bootstrap_resamples=50, target_sensitivity=0.9))
    for row in rows:
        v = val[val.variant == row["variant"]]
        yv, pv = v.label.to_numpy(), v.prob_malignant.to_numpy()
        assert ((pv >= row["threshold"]) & (yv == 1)).sum() / yv.sum() >= 0.9
        assert row["threshold_rule"] == "sensitivity >= 0.9 on validation"


@pytest.mark.parametrize("bad, message", [
    (lambda f: f.assign(prob_malignant=f.prob_malignant.where(f.index != 3, np.nan)), "NaN"),
    (lambda f: f.assign(prob_malignant=f.prob_malignant.where(f.index != 3, 1.5)), "[0, 1]"),
    (lambda f: f.iloc[0:0], "empty"),
])
def test_bad_predictions_are_clear_errors(fake_predictions, bad, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        evaluate(bad(fake_predictions(20)), None, EvalSettings(bootstrap_resamples=20))
    assert "empty" in str(err.value) or "variant 'a'" in str(err.value)


def test_single_class_marks_metrics_undefined_not_half(fake_predictions, tmp_path):
    test = fake_predictions(20)
    test = test[test.label == 1]
    val = fake_predictions(20).query("label == 0")  # threshold impossible on one class
    rows = report.write_run(tmp_path, test, {}, {}, {"seed": 0}, val,
                            EvalSettings(bootstrap_resamples=20), set(), None)
    row = rows[0]
    assert math.isnan(row["auc"]) and math.isnan(row["specificity"]) and row["sensitivity"] >= 0
    assert math.isnan(row["threshold"]) and math.isnan(row["thr_sensitivity"])
    assert "auc is undefined because y has no benign" in row["undefined"]
    assert "threshold:" in row["undefined"]
    clean = json.loads((tmp_path / "results.json").read_text())["clean_rows"][0]
    assert clean["n_test"] == 0 and clean["auc"] is None and "empty" in clean["undefined"]
    assert "n/a" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "index.html").is_file()


def test_evaluation_config_table(tmp_path):
    text = (ROOT / "benchmarks/configs/default.toml").read_text()
    cfg = config.from_dict({**_toml(text), "evaluation": {"bootstrap_resamples": 500,
                                                          "target_sensitivity": 0.95,
                                                          "tta": True}})
    assert cfg.evaluation.bootstrap_resamples == 500 and cfg.evaluation.tta
    assert config.from_dict(_toml(text)).evaluation.bootstrap_resamples == 1000
    for bad, msg in (({"bootstrap_resamples": 0}, "bootstrap_resamples"),
                     ({"target_sensitivity": 1.5}, "target_sensitivity"),
                     ({"bootstrap_resample": 10}, "did you mean 'bootstrap_resamples'")):
        with pytest.raises(UserError, match=msg):
            config.from_dict({**_toml(text), "evaluation": bad})


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)
