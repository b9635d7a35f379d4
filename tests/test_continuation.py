"""A variant that differs from an earlier one only by more epochs continues from its final
epoch: the result must be bit for bit the longer training done from scratch."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from melanoma import config
from melanoma.cli.main import main
from melanoma.runs.benchmark import continuations

SHORT = {"name": "short", "preprocessing": "samplewise"}
LONG = {"name": "long", "preprocessing": "samplewise", "epochs": 3}
DATA = {"n_train_per_class": 10, "n_test_per_class": 4, "image_size": 40, "seed": 3}


def run(tmp_path: Path, tag: str, text: str, capsys) -> tuple[pd.DataFrame, dict, str]:
    config = tmp_path / f"{tag}.toml"
    config.write_text(text)
    out = tmp_path / tag
    code = main(["run", "--config", str(config), "--out", str(out), "--models-dir",
                 str(tmp_path / f"models-{tag}")])
    err = capsys.readouterr().err
    assert code == 0, err
    return (pd.read_csv(out / "predictions.csv"),
            json.loads((out / "histories.json").read_text()), err)


def test_the_plan_pairs_only_variants_that_differ_by_epochs(tmp_path):
    cfg = config.from_dict({"name": "p", "defaults": {"image_size": 32}, "variants": [
        {"name": "a", "epochs": 2}, {"name": "b", "epochs": 4}, {"name": "c", "epochs": 3},
        {"name": "d", "epochs": 5, "learning_rate": 1e-4}, {"name": "e", "epochs": 1}]})
    plan = continuations(cfg, "data", tmp_path, retrain=False)
    # b and c continue from a (c's longest earlier shorter twin is a: b is longer than c);
    # d differs by its learning rate too; e is shorter than every earlier variant
    assert {k: sorted(f.name.split("-")[0] for f in v) for k, v in plan.items()} == {
        "a": ["b", "c"]}


@pytest.mark.slow
def test_longer_variant_continues_and_equals_training_from_scratch(tmp_path, capsys,
                                                                    monkeypatch, tiny_config):
    """Bit for bit on purpose: `run` turns TensorFlow's op determinism on on a CPU, and the
    claim is that continuing IS the longer training, not an approximation of it."""
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "data"))
    both_text = tiny_config("cont", [SHORT, LONG], seed=5, synthetic=DATA, defaults={"epochs": 2})
    both, histories, err = run(tmp_path, "both", both_text, capsys)
    assert "handed over to long-" in err and "long resuming after epoch 2/3" in err
    alone_text = tiny_config("cont", [LONG], seed=5, synthetic=DATA, defaults={"epochs": 2})
    alone, alone_histories, alone_err = run(tmp_path, "alone", alone_text, capsys)
    assert "resuming" not in alone_err
    continued = both[both["variant"] == "long"].reset_index(drop=True)
    pd.testing.assert_frame_equal(continued, alone.reset_index(drop=True))  # bit for bit
    assert histories["long"] == alone_histories["long"]
    assert len(histories["long"]["loss"]) == 3 and len(histories["short"]["loss"]) == 2
    assert histories["long"]["loss"][:2] == histories["short"]["loss"]
