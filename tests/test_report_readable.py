"""The readable report: the short table (terminal, results.md, index.html), --wide, the
page's plain-text audit and notes, one curve for one model under two names."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.cli.main import main
from melanoma.evaluation import metric_table, metrics
from melanoma.evaluation.rows import EvalSettings
from melanoma.reporting import compact, same_model
from melanoma.reporting import html as html_report
from melanoma.reporting import run_report as report


def _write(out, test, val=None, clean=None, audit=None, provenance=None):
    specs = {n: {"spec": f"x / 255 then {n}"} for n in test["variant"].unique()}
    return report.write_run(out, test, specs, {}, provenance or {"config": {"name": "t"},
                                                                 "seed": 3}, val,
                            EvalSettings(seed=3, bootstrap_resamples=100), clean, audit)


@pytest.fixture(scope="module")
def default_like(fake_predictions, default_run_shape, tmp_path_factory):
    """A run shaped like the default one: its five names, a clean subset, an audit, and
    random_featurewise the same model as featurewise (identical predictions)."""
    LONG, AUDIT = default_run_shape
    out = tmp_path_factory.mktemp("default_like")
    test = fake_predictions(200, LONG)
    val = fake_predictions(80, LONG, seed=1, prefix="train")
    for frame in (test, val):
        same = frame["variant"] == LONG[3]
        frame.loc[same, "prob_malignant"] = frame.loc[frame["variant"] == LONG[1],
                                                      "prob_malignant"].to_numpy()
    clean = set(test["file"].unique()[::3])
    _write(out, test, val, clean, AUDIT, {"config": {"name": "default"}, "seed": 3,
                                          "model_keys": {LONG[1]: "k1", LONG[3]: "k1"}})
    return out


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_short_table_cells_are_the_rows_values(default_like):
    saved = json.loads((default_like / "results.json").read_text())
    rows = saved["rows"] + saved["clean_rows"]
    lines = _table_lines(compact.text_table(rows))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["variant", "test set", "n", "AUC [95% CI]", "sens @thr", "spec @thr", "ECE"]
    assert [k for k, _ in compact.columns(rows)][3:] == list(metric_table.compact_keys(True))
    for line, row in zip(lines[2:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [row["variant"], row["test_set"], str(row["n_test"])]
        auc = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cells[3]).groups()
        assert [float(a) for a in auc] == pytest.approx(
            [row["auc"], row["auc_ci_low"], row["auc_ci_high"]], abs=5e-4)
        for cell, key in zip(cells[4:], ("thr_sensitivity", "thr_specificity", "ece")):
            assert float(cell) == pytest.approx(row[key], abs=5e-4)


def test_ece_column_is_the_independent_ece(default_like):
    test = pd.read_csv(default_like / "predictions.csv")
    row = json.loads((default_like / "results.json").read_text())["rows"][0]
    group = test[test["variant"] == row["variant"]]
    y, p = group["label"].to_numpy(), group["prob_malignant"].to_numpy()
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    ece = sum(abs(p[which == b].mean() - y[which == b].mean()) * np.sum(which == b)
              for b in range(10) if np.any(which == b)) / len(y)
    assert row["ece"] == pytest.approx(ece, abs=1e-9)
    assert row["auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics.expected_calibration_error(y, p) == pytest.approx(ece)


def test_default_run_table_fits_120_columns_and_wide_has_everything(default_like, capsys):
    assert main(["report", str(default_like)]) == 0
    short = capsys.readouterr().out
    width = max(len(line) for line in short.splitlines())
    assert width <= 120, short
    assert "DeLong" not in short and "--wide" in short
    assert main(["report", str(default_like), "--wide"]) == 0
    wide = capsys.readouterr().out
    header = [c.strip() for c in _table_lines(wide)[0].strip("|").split("|")]
    assert "DeLong p vs best" in header and "preprocessing" in header and "spec" not in header
    assert "spec @argmax" in header and max(len(line) for line in wide.splitlines()) > 200


def test_results_md_has_the_short_table_then_every_column(default_like):
    text = (default_like / "results.md").read_text()
    short, wide = (_table_lines(part)[0] for part in text.split("## Every column"))
    assert "| AUC [95% CI]" in short and "DeLong" not in short
    assert "DeLong p vs best" in wide and "| preprocessing" in wide


def test_without_a_threshold_the_short_table_reads_argmax():
    rows = [{"variant": "a", "n_test": 10, "auc": 0.8, "auc_ci_low": 0.7, "auc_ci_high": 0.9,
             "sensitivity": 0.5, "specificity": 0.75, "ece": 0.1, "threshold": float("nan"),
             "thr_sensitivity": float("nan")}]
    header = _table_lines(compact.text_table(rows))[0]
    assert "sens @argmax" in header and "@thr" not in header and "test set" not in header
    assert "0.500" in compact.text_table(rows) and "argmax" in compact.footer(rows)


def test_seed_columns_appear_once_seeds_exist():
    base = {"n_test": 10, "auc": 0.8, "auc_ci_low": 0.7, "auc_ci_high": 0.9, "auc_sd": 0.02,
            "threshold": 0.4, "thr_sensitivity": 0.6, "thr_specificity": 0.7, "ece": 0.05,
            "n_seeds": 3, "delong_reference": "a"}
    rows = [{**base, "variant": "a"}, {**base, "variant": "b", "within_training_noise": True},
            {**base, "variant": "c", "within_training_noise": False}]
    lines = _table_lines(compact.text_table(rows))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[2:6] == ["AUC mean [95% CI]", "seeds", "AUC seed SD", "within noise"]
    assert [line.split("|")[6].strip() for line in lines[2:]] == ["best", "yes", "no"]
    assert "not measured" not in compact.footer(rows)


def test_page_reads_as_text_not_python(default_like):
    page = (default_like / "index.html").read_text()
    visible = re.sub(r"<script>.*?</script>|<pre>.*?</pre>", "", page, flags=re.S)
    assert "`" not in visible and "<code>@argmax</code>" in visible
    audit = visible.split("<h2>Leakage audit</h2>")[1].split("<h2>")[0]
    assert "train 340, val 60, test 200" in audit and "2.5%" in audit
    assert "{" not in audit and "False" not in audit and "no</td>" in audit
    assert "5 of 200 test images (2.5%)" in audit
    short = visible.split("<h2>Results</h2>")[1].split("<details>")[0]
    assert "DeLong" not in short and "<th>AUC [95% CI]</th>" in short
    assert "<th>preprocessing</th>" in visible and "<th>spec</th>" not in visible


def test_audit_values_as_words():
    assert html_report.audit_value("n_by_split", {"train": 1, "test": 2}) == "train 1, test 2"
    assert html_report.audit_value("include_flips", True) == "yes"
    assert html_report.audit_value("test_fraction_affected", 0.1234) == "12.3%"
    assert html_report.audit_value("min_corr", 0.95) == "0.95"
    assert html_report.audit_value("n_grouped", None) == "n/a"


def test_one_model_under_two_names_is_one_curve(default_like, default_run_shape, monkeypatch,
                                                 tmp_path):
    LONG = default_run_shape[0]
    drawn = {}

    def spy(name):
        original = getattr(report.plots, name)

        def wrapper(curves, rows, path):
            drawn[name] = (list(curves), {k: rows[k]["variant"] for k in curves})
            return original(curves, rows, path)
        monkeypatch.setattr(report.plots, name, wrapper)

    spy("roc_with_intervals")
    spy("precision_recall")
    assert main(["report", str(default_like), "--out", str(tmp_path / "again")]) == 0
    for curves, labels in drawn.values():
        assert curves == [LONG[0], LONG[1], LONG[2], LONG[4]]
        assert labels[LONG[1]] == f"{LONG[1]}\n= {LONG[3]} (same model)"
    page = (tmp_path / "again" / "index.html").read_text()
    assert f"{LONG[1]} = {LONG[3]} (same model): one curve" in page
    table = (tmp_path / "again" / "results.md").read_text()  # the file a reader may open alone
    assert f"{LONG[1]} = {LONG[3]} (same model): one curve" in table


def test_same_models_needs_identical_predictions_for_every_seed(fake_predictions):
    test = fake_predictions(40, ("a", "b", "c")).assign(seed=1)
    test.loc[test["variant"] == "b", "prob_malignant"] = test.loc[
        test["variant"] == "a", "prob_malignant"].to_numpy()
    assert same_model.same_models(test) == {"a": ["a", "b"]}
    other_seed = test.assign(seed=2)
    other_seed.loc[other_seed["variant"] == "b", "prob_malignant"] += 1e-9
    assert same_model.same_models(pd.concat([test, other_seed])) == {}
    assert same_model.group_label(["a", "b"], {"a": "x", "b": "y"}).endswith(
        "(identical predictions)")


def test_a_clean_set_equal_to_the_full_set_is_one_line_not_repeated_rows(tmp_path):
    from melanoma.evaluation.rows import EvalSettings
    from melanoma.reporting import run_report

    files = [f"test/{c}/{i}.png" for c in ("Benign", "Malignant") for i in range(10)]
    test = pd.DataFrame({"variant": "a", "file": files, "label": [0] * 10 + [1] * 10,
                         "prob_malignant": [i / 20 for i in range(20)]})
    provenance = {"config": {"name": "cfg", "data": {"limit": 10}}, "seed": 0,
                  "date": "2026-12-03T19:00:00+00:00", "git": {"commit": "0123456789abcdef"},
                  "data": {"root": "/x/isic2017", "fingerprint": "3caf28e9445075eb",
                           "n_train": 40, "n_val": 8}}
    run_report.write_run(tmp_path, test, {}, {}, provenance, None, EvalSettings(bootstrap_resamples=20),
                     set(files), {"n_test": 20, "n_test_clean": 20})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["clean_rows"] == [] and len(saved["rows"]) == 1
    md, page = (tmp_path / "results.md").read_text(), (tmp_path / "index.html").read_text()
    for text in (md, page):
        assert "the clean test set is the full test set" in text
        assert "Seeds: with several training seeds" not in text  # one seed: not that paragraph
        assert ("Date 2026-12-03T19:00:00+00:00. Data: `isic2017` (train 40, val 8, test 20; "
                "at most 10 per class and split; fingerprint 3caf28e9445075eb). Config: `cfg`. "
                "Commit 0123456789ab.") in text.replace("<code>", "`").replace("</code>", "`")
    assert md.index("Date 2026") < md.index("| variant")
