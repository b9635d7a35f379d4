"""Degenerate models (probabilities that barely vary): the rule on its own, and a saved run
whose one variant is made constant (+1e-7 noise) rebuilt by `melanoma-bench report` (no
model, no training): the row is flagged, gets no DeLong p-value, is never the reference,
and the terminal, results.md and index.html say so."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from melanoma.cli.main import main
from melanoma.evaluation import degenerate
from melanoma.evaluation.rows import EvalSettings, evaluate
from melanoma.reporting import run_report as report


def scored(n: int, seed: int = 0, names=("a", "b", "c")) -> pd.DataFrame:
    """Balanced labels, logistic scores of increasing quality per variant."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    files = [f"test/{'Malignant' if v else 'Benign'}/{i}.jpg" for i, v in enumerate(y)]
    return pd.concat([pd.DataFrame({
        "variant": name, "file": files, "label": y,
        "prob_malignant": np.round(1 / (1 + np.exp(-(y * (0.8 + 0.5 * k)
                                                     + rng.normal(0, 1, len(y))))), 9)})
        for k, name in enumerate(names)], ignore_index=True)


def constant(n: int, seed: int = 0, value: float = 0.5926466) -> np.ndarray:
    return value + np.random.default_rng(seed).normal(0, 1e-7, n)


def test_rule_flags_collapsed_and_saturated_outputs_only():
    assert "barely vary" in degenerate.degenerate_reason(constant(200))
    with_outlier = constant(200)
    with_outlier[:3] = [0.1, 0.9, 0.99]  # a few images must not make it look alive
    assert "barely vary" in degenerate.degenerate_reason(with_outlier)
    saturated = np.r_[np.ones(150), np.linspace(0.2, 0.9, 50)]
    assert "150 of 200 images share one probability" in degenerate.degenerate_reason(saturated)
    alive = scored(200)["prob_malignant"].to_numpy()
    assert degenerate.degenerate_reason(alive) == ""
    small_but_real = 0.5 + np.linspace(-1e-3, 1e-3, 200)  # 100x the float32 noise floor
    assert degenerate.degenerate_reason(small_but_real) == ""
    assert degenerate.degenerate_reason([0.5]) == ""


def test_degenerate_rows_are_not_compared_nor_the_reference():
    test = scored(160)
    best_auc = test[test["variant"] == "c"]
    test.loc[test["variant"] == "c", "prob_malignant"] = constant(len(best_auc))
    rows = evaluate(test, None, EvalSettings(bootstrap_resamples=50))
    by = {r["variant"]: r for r in rows}
    assert by["c"]["degenerate"] and "test: probabilities barely vary" in by["c"]["degenerate_reason"]
    assert not by["a"]["degenerate"] and by["a"]["degenerate_reason"] == ""
    assert {r["delong_reference"] for r in rows} == {"b"}
    assert math.isnan(by["c"]["auc_delong_p"]) and math.isfinite(by["a"]["auc_delong_p"])


def test_report_on_a_run_with_a_constant_variant(tmp_path, capsys):
    test, val = scored(160), scored(80, seed=1)
    report.write_run(tmp_path, test, {n: {"spec": n} for n in "abc"}, {},
                     {"config": {"name": "gen"}, "seed": 0}, val,
                     EvalSettings(bootstrap_resamples=50))
    saved = pd.read_csv(tmp_path / "predictions.csv")
    is_b = saved["variant"] == "b"
    saved.loc[is_b, "prob_malignant"] = constant(int(is_b.sum()), seed=3)
    saved.to_csv(tmp_path / "predictions.csv", index=False, float_format="%.9g")
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {r["variant"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert rows["b"]["degenerate"] is True and "barely vary" in rows["b"]["degenerate_reason"]
    assert rows["b"]["auc_delong_p"] is None and rows["a"]["auc_delong_p"] is not None
    assert rows["a"]["delong_reference"] == "c" and not rows["a"]["degenerate"]
    line_b = next(line for line in out.splitlines() if line.startswith("| b "))
    assert degenerate.CELL in line_b and f"{rows['b']['auc']:.3f}" not in line_b
    assert "DEGENERATE b: test: probabilities barely vary" in out
    for name in ("results.md", "index.html"):
        text = (tmp_path / name).read_text()
        assert degenerate.CELL in text and "DEGENERATE b" in text, name


@pytest.mark.parametrize("seeds", [(1, 2)])
def test_several_seeds_one_degenerate_seed_flags_the_variant(seeds):
    frames = [scored(120, seed=s).assign(seed=s) for s in seeds]
    frames[1].loc[frames[1]["variant"] == "c", "prob_malignant"] = constant(120)
    rows = report.rows_from_predictions(pd.concat(frames, ignore_index=True), {},
                                        settings=EvalSettings(bootstrap_resamples=50))
    by = {r["variant"]: r for r in rows}
    assert by["c"]["degenerate"] and by["c"]["degenerate_reason"].startswith("seed 2: test:")
    assert by["a"]["delong_reference"] == "b" and not by["b"]["degenerate"]
