"""`melanoma-bench bench` comparison logic on saved predictions (no training), plus one slow
end-to-end run of the committed benchmark against its committed baseline."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma.cli.main import main
from melanoma.config import resolve
from melanoma.runs import regression

ROOT = Path(__file__).resolve().parents[1]
BENCH_CONFIG = resolve("bench")
BASELINES = ROOT / "benchmarks" / "baselines"

CONFIG = """
name = "saved"
seed = 1
[[variants]]
name = "a"
[[variants]]
name = "b"
preprocessing = "native"
"""


def _predictions(seed: int = 0, shift: float = 1.5) -> pd.DataFrame:
    """Two variants' saved predictions on 100 + 100 test images (seeded, realistic AUCs)."""
    rng = np.random.default_rng(seed)
    frames = []
    for variant, sep in (("a", shift), ("b", shift / 2)):
        y = np.repeat([0, 1], 100)
        p = 1 / (1 + np.exp(-(rng.normal(0, 1, 200) + sep * (2 * y - 1))))
        frames.append(pd.DataFrame({"variant": variant, "file": [f"test/{i}.jpg" for i in range(200)],
                                    "label": y, "prob_malignant": p}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture()
def saved(tmp_path):
    """A config, its predictions.csv and a baseline made from them (through the CLI)."""
    config = tmp_path / "saved.toml"
    config.write_text(CONFIG)
    predictions = tmp_path / "predictions.csv"
    _predictions().to_csv(predictions, index=False)
    baseline = tmp_path / "saved.json"
    assert main(["bench", "--config", str(config), "--baseline", str(baseline),
                 "--predictions", str(predictions), "--update-baseline"]) == 0
    return {"config": config, "predictions": predictions, "baseline": baseline}


def _bench(saved, capsys) -> tuple[int, str]:
    code = main(["bench", "--config", str(saved["config"]), "--baseline", str(saved["baseline"]),
                 "--predictions", str(saved["predictions"])])
    return code, capsys.readouterr().out


def test_update_baseline_records_date_commit_method_and_intervals(saved):
    baseline = json.loads(saved["baseline"].read_text())
    assert baseline["created"].startswith("20") and "T" in baseline["created"]
    assert len(baseline["git"]["commit"]) in (40, len("unknown"))
    assert "bootstrap" in baseline["tolerance_method"]
    auc = baseline["variants"]["a"]["auc"]
    assert auc["ci_low"] < auc["value"] < auc["ci_high"]
    assert set(baseline["variants"]) == {"a", "b"}


def test_passes_against_its_own_baseline(saved, capsys):
    code, out = _bench(saved, capsys)
    assert code == 0, out
    assert "PASS" in out and "REGRESSED" not in out


def test_fails_with_a_table_when_baseline_demands_more(saved, capsys):
    baseline = json.loads(saved["baseline"].read_text())
    entry = baseline["variants"]["a"]["auc"]
    delivered = entry["value"]
    entry.update(value=delivered + 0.1, ci_low=delivered + 0.07, ci_high=delivered + 0.13)
    saved["baseline"].write_text(json.dumps(baseline))
    code, out = _bench(saved, capsys)
    assert code == 1
    failed = out.split("checks regressed:")[1]
    header = next(line for line in failed.splitlines() if line.startswith("| variant"))
    for column in ("metric", "baseline", "current", "difference", "allowed drop", "verdict"):
        assert column in header
    line = next(line for line in failed.splitlines() if "| auc" in line)
    assert "REGRESSED" in line
    assert f"{delivered + 0.1:.4f}" in line and f"{delivered:.4f}" in line
    assert "-0.1000" in line and "0.0300" in line
    assert "FAIL: 1 of 30" in out


def test_drop_inside_the_interval_is_noise_not_regression():
    entry = {"value": 0.80, "ci_low": 0.74, "ci_high": 0.85}
    assert regression.check_metric("v", "auc", entry, 0.75).verdict == "ok"
    assert regression.check_metric("v", "auc", entry, 0.73).verdict == "REGRESSED"
    assert regression.check_metric("v", "auc", entry, 0.87).verdict == "improved"
    assert regression.allowed_drop("auc", entry) == pytest.approx(0.06)


def test_lower_is_better_metrics_regress_upwards():
    entry = {"value": 0.20, "ci_low": 0.17, "ci_high": 0.24}
    assert regression.allowed_drop("brier", entry) == pytest.approx(0.04)
    assert regression.check_metric("v", "brier", entry, 0.25).verdict == "REGRESSED"
    assert regression.check_metric("v", "brier", entry, 0.12).verdict == "improved"


def test_counts_must_match_and_missing_variant_fails(saved):
    baseline = regression.read_baseline(saved["baseline"])
    current = regression.summarise(_predictions())
    current["a"]["n"]["value"] = 150.0
    del current["b"]
    verdicts = {(c.variant, c.metric): c.verdict for c in regression.compare(baseline, current)}
    assert verdicts[("a", "n")] == "CHANGED"
    assert verdicts[("b", "auc")] == "MISSING"
    assert verdicts[("a", "auc")] == "ok"


def test_a_worse_model_is_caught(saved, capsys):
    _predictions(shift=0.3).to_csv(saved["predictions"], index=False)
    code, out = _bench(saved, capsys)
    assert code == 1 and "REGRESSED" in out


def test_another_config_is_not_compared_silently(saved, capsys):
    saved["config"].write_text(CONFIG.replace("seed = 1", "seed = 2"))
    code, out = _bench(saved, capsys)
    assert code == 1 and "different config" in out


def test_committed_baseline_fits_the_bench_config():
    cfg = tomllib.loads(BENCH_CONFIG.read_text())
    baseline = regression.read_baseline(BASELINES / f"{cfg['name']}.json")
    assert baseline["config_hash"] == regression.config_hash(BENCH_CONFIG)
    assert list(baseline["variants"]) == [v["name"] for v in cfg["variants"]]
    assert baseline["created"] and baseline["git"]["commit"]
    for entries in baseline["variants"].values():
        assert set(entries) >= {"accuracy", "auc", "sensitivity", "specificity"}


@pytest.mark.slow
def test_bench_retrains_and_passes_its_committed_baseline(tmp_path, capsys):
    code = main(["bench", "--out", str(tmp_path / "bench")])
    out = capsys.readouterr().out
    assert code == 0, out
