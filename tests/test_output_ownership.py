"""An output folder holds one experiment's report: `run`, `evaluate` and `report --out` into a
folder holding the report of another config, data set or limit stop with one line naming
--out and --overwrite, before any training, and leave the earlier report byte for byte;
the same experiment (a rerun) and --overwrite go on. No model is trained here: the first
report is written from generated predictions, and the run's work is replaced by a stub
once the check has passed."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma import config
from melanoma.cli.main import main
from melanoma.data import layout
from melanoma.data.splits import limited
from melanoma.reporting import ownership
from melanoma.reporting import run_report as report
from melanoma.runs import benchmark


def _images(root: Path, shade: int) -> Path:
    from PIL import Image

    for split, n in (("train", 8), ("test", 4)):
        for k, cls in enumerate(("benign", "malignant")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24, 24), (shade, 40 * k, 10 * i)).save(folder / f"{i}.png")
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def setup(tmp_path, tiny_config):
    cfg_path = tmp_path / "owned.toml"
    cfg_path.write_text(tiny_config("owned", synthetic=None))
    a, b = _images(tmp_path / "a", 100), _images(tmp_path / "b", 180)
    cfg = config.load(cfg_path)
    found = limited(layout.discover(a), cfg.data.limit)
    identity = ownership.run_identity(cfg.to_dict(), benchmark.data_fingerprint(found))
    files = [f"test/{c}/{i}.png" for c in ("benign", "malignant") for i in range(4)]
    test = pd.DataFrame({"variant": "tiny", "file": files, "label": np.repeat([0, 1], 4),
                         "prob_malignant": np.linspace(0.1, 0.9, 8)})
    out = tmp_path / "out"
    report.write_run(out, test, {"tiny": {"spec": "x"}}, {},
                     {"config": cfg.to_dict(), "seed": 7, ownership.FIELD: identity})
    return {"cfg": cfg_path, "a": a, "b": b, "out": out, "models": tmp_path / "models"}


def _stub_work(monkeypatch) -> list:
    called = []
    monkeypatch.setattr(benchmark, "_work", lambda *args, **kw: called.append(args) or None)
    return called


def _run(setup, data: Path, *extra: str) -> int:
    return main(["run", "--config", str(setup["cfg"]), "--data-dir", str(data), "--out",
                 str(setup["out"]), "--models-dir", str(setup["models"]), *extra])


def test_run_on_other_data_refuses_and_keeps_the_report(setup, monkeypatch, capsys,
                                                         one_line_error):
    before, called = _digest(setup["out"]), _stub_work(monkeypatch)
    capsys.readouterr()
    assert _run(setup, setup["b"]) == 2
    one_line_error("--out", "--overwrite", "data set fingerprint")
    assert not called and _digest(setup["out"]) == before
    assert not setup["models"].exists()  # refused before anything was made


def test_rerun_of_the_same_experiment_and_overwrite_go_on(setup, monkeypatch):
    called = _stub_work(monkeypatch)
    assert _run(setup, setup["a"]) == 0 and len(called) == 1  # same config and data: resumes
    assert _run(setup, setup["b"], "--overwrite") == 0 and len(called) == 2


def test_other_limit_or_setting_refuses(setup, monkeypatch, capsys):
    _stub_work(monkeypatch)
    assert _run(setup, setup["a"], "--limit", "6") == 2
    assert "limit None, now 6" in capsys.readouterr().err
    assert _run(setup, setup["a"], "--set", "defaults.epochs=2") == 2
    assert "other config settings (variants)" in capsys.readouterr().err


def test_report_out_into_another_experiments_folder_refuses(setup, tmp_path, capsys):
    other = tmp_path / "other"
    report.write_run(other, pd.DataFrame({"variant": "z", "file": ["f1", "f2"], "label": [0, 1],
                                          "prob_malignant": [0.2, 0.7]}),
                     {}, {}, {"config": {"name": "else"}, "seed": 0})
    before = _digest(other)
    assert main(["report", str(setup["out"]), "--out", str(other)]) == 2
    assert "--overwrite" in capsys.readouterr().err and _digest(other) == before
    assert main(["report", str(setup["out"]), "--out", str(tmp_path / "copy")]) == 0
    assert main(["report", str(setup["out"]), "--out", str(tmp_path / "copy")]) == 0  # again
    assert main(["report", str(setup["out"]), "--out", str(other), "--overwrite"]) == 0


def test_evaluate_into_a_run_report_refuses_before_loading_models(setup, capsys):
    before = _digest(setup["out"])
    assert main(["evaluate", str(setup["a"] / "no-such-model.keras"), "--data-dir",
                 str(setup["a"]), "--out", str(setup["out"])]) == 2
    err = capsys.readouterr().err
    assert "holds the report of another experiment" in err and "--overwrite" in err, err
    assert _digest(setup["out"]) == before
