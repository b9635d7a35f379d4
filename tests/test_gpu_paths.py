"""The GPU switches of `run`, checked for wiring on the CPU (CI has no GPU): mixed precision
keeps float32 probabilities, XLA can be forced on or off, several GPUs would mirror."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from melanoma import config
from melanoma.cli.main import main
from melanoma.util import backend
from melanoma.util.errors import UserError


@pytest.mark.slow  # ~85 s: float16 B0 on a CPU is emulated; tests/test_backends.py trains it too
def test_mixed_precision_run_gives_float32_probabilities(tiny_config, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "data"))
    path = tmp_path / "c.toml"
    path.write_text(tiny_config("gpu_paths", [{"name": "mixed", "mixed_precision": True,
                                               "jit_compile": False}], synthetic="small"))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out"),
                 "--models-dir", str(tmp_path / "models")]) == 0, capsys.readouterr().err
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert np.isfinite(predictions["prob_malignant"]).all()
    sidecar = json.loads(next((tmp_path / "models").glob("mixed-*.json")).read_text())
    assert sidecar["variant"]["mixed_precision"] is True
    import keras

    assert keras.config.dtype_policy().name == "float32"  # the policy does not leak


def test_switches_enter_the_keys_only_when_set():
    plain = config.from_dict({"name": "k", "variants": [{"name": "a"}]}).variants[0]
    mixed = config.from_dict({"name": "k", "variants": [{"name": "a",
                                                         "mixed_precision": True}]}).variants[0]
    xla = config.from_dict({"name": "k", "variants": [{"name": "a", "jit_compile": True}]}
                           ).variants[0]
    keys = {v.model_key("d", 1, 0.15, "nearest") for v in (plain, mixed, xla)}
    assert len(keys) == 3
    assert len({v.architecture_key(1) for v in (plain, mixed, xla)}) == 3
    with pytest.raises(UserError, match='jit_compile must be true, false or "auto"'):
        config.from_dict({"name": "k", "variants": [{"name": "a", "jit_compile": "yes"}]})


def test_mirrored_only_with_several_gpus():
    assert backend.distribution(0) is None and backend.distribution(1) is None
    assert type(backend.distribution(2)).__name__ == "MirroredStrategy"  # TensorFlow here
