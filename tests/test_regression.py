"""`melanoma-bench bench`: the seed gate on saved predictions (no training), plus one slow
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
from melanoma.evaluation import gate, variance
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


def _predictions(seeds=range(5), shift: float = 1.5, seed: int = 0) -> pd.DataFrame:
    """Two variants' saved predictions on 100 + 100 test images, one model per training seed
    (each seed its own separation around ``shift``: training noise)."""
    rng = np.random.default_rng(seed)
    frames = []
    y = np.repeat([0, 1], 100)
    for variant, sep in (("a", shift), ("b", shift / 2)):
        for s in seeds:
            sep_s = sep + rng.normal(0, 0.1)
            p = 1 / (1 + np.exp(-(rng.normal(0, 1, 200) + sep_s * (2 * y - 1))))
            frames.append(pd.DataFrame({"variant": variant, "seed": s,
                                        "file": [f"test/{i}.jpg" for i in range(200)],
                                        "label": y, "prob_malignant": p}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture()
def saved(tmp_path):
    """A config, its predictions.csv (5 seeds) and a baseline made from them (via the CLI)."""
    config = tmp_path / "saved.toml"
    config.write_text(CONFIG)
    predictions = tmp_path / "predictions.csv"
    _predictions().to_csv(predictions, index=False)
    baseline = tmp_path / "saved.json"
    assert main(["bench", "--config", str(config), "--baseline", str(baseline),
                 "--predictions", str(predictions), "--update-baseline"]) == 0
    return {"config": config, "predictions": predictions, "baseline": baseline}


def _bench(saved, capsys, *extra) -> tuple[int, str]:
    code = main(["bench", "--config", str(saved["config"]), "--baseline", str(saved["baseline"]),
                 "--predictions", str(saved["predictions"]), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_update_baseline_records_date_commit_rule_and_every_seed(saved):
    baseline = json.loads(saved["baseline"].read_text())
    assert baseline["created"].startswith("20") and "T" in baseline["created"]
    assert len(baseline["git"]["commit"]) in (40, len("unknown"))
    assert baseline["format"] == gate.FORMAT and "Holm" in baseline["rule"]
    assert set(baseline["variants"]) == {"a", "b"} and baseline["overrides"] == []
    table = variance.per_seed_metrics(_predictions())
    a = table[table.variant == "a"]
    assert baseline["variants"]["a"]["seeds"] == [0, 1, 2, 3, 4]
    assert baseline["variants"]["a"]["per_seed"]["auc"] == pytest.approx(a["auc"].tolist(),
                                                                         abs=1e-9)


def test_a_baseline_needs_five_seeds(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    _predictions(range(3)).to_csv(tmp_path / "p.csv", index=False)
    assert main(["bench", "--config", str(config), "--baseline", str(tmp_path / "b.json"),
                 "--predictions", str(tmp_path / "p.csv"), "--update-baseline"]) == 2
    assert "at least 5" in capsys.readouterr().err and not (tmp_path / "b.json").exists()


def test_passes_against_its_own_baseline(saved, capsys):
    code, out = _bench(saved, capsys)
    assert code == 0, out
    assert "PASS" in out and "REGRESSED" not in out and "differs" not in out


def test_new_seeds_from_the_same_distribution_pass(saved, capsys):
    _predictions(range(10, 13), seed=1).to_csv(saved["predictions"], index=False)
    code, out = _bench(saved, capsys)
    assert code == 0, out


def test_a_worse_model_is_caught_with_the_gate_table(saved, capsys):
    _predictions(range(10, 15), shift=0.5, seed=1).to_csv(saved["predictions"], index=False)
    code, out = _bench(saved, capsys)
    assert code == 1 and "REGRESSED" in out and "FAIL" in out
    header = next(line for line in out.splitlines() if line.startswith("| variant"))
    for column in ("baseline mean ± sd (seeds)", "run mean ± sd (seeds)", "p (one-sided)"):
        assert column in header
    line = next(line for line in out.splitlines() if line.startswith("| a ") and "| auc " in line)
    assert "REGRESSED" in line and line.count("(5)") == 2


def test_another_config_is_said_and_still_judged(saved, capsys):
    code, out = _bench(saved, capsys, "--set", "defaults.epochs=3")
    assert code == 0 and "config differs" in out and "defaults.epochs=3" in out and "PASS" in out
    saved["config"].write_text(CONFIG.replace("seed = 1", "seed = 2"))
    _predictions(range(5), shift=0.5).to_csv(saved["predictions"], index=False)
    code, out = _bench(saved, capsys)
    assert code == 1 and "config differs" in out and "REGRESSED" in out


def test_an_old_format_baseline_is_a_clear_error(saved, capsys):
    saved["baseline"].write_text(json.dumps({"variants": {}, "config_hash": "x"}))
    code, out = _bench(saved, capsys)
    assert code == 2 and "not a seed baseline" in out


def test_committed_baseline_fits_the_bench_config():
    cfg = tomllib.loads(BENCH_CONFIG.read_text())
    baseline = regression.read_baseline(BASELINES / f"{cfg['name']}.json")
    assert baseline["config_hash"] == regression.config_hash(BENCH_CONFIG)
    assert baseline["format"] == gate.FORMAT
    assert list(baseline["variants"]) == [v["name"] for v in cfg["variants"]]
    assert baseline["created"] and baseline["git"]["commit"]
    for entry in baseline["variants"].values():
        assert entry["seeds"] == cfg["seeds"] and len(entry["seeds"]) >= gate.MIN_BASELINE_SEEDS
        assert set(entry["per_seed"]) >= set(gate.GATED)


@pytest.mark.slow
def test_bench_retrains_and_passes_its_committed_baseline(tmp_path, capsys):
    code = main(["bench", "--out", str(tmp_path / "bench")])
    out = capsys.readouterr().out
    assert code == 0, out
