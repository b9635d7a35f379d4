"""The perf suite's bookkeeping (no timing here: `melanoma-bench perf` measures)."""
from __future__ import annotations

import json

import pytest

from benchmarks import perf


def test_alternate_interleaves_the_two_sides():
    calls = []
    rates = perf.alternate({"a": lambda: calls.append("a") or 1.0,
                            "b": lambda: calls.append("b") or 2.0}, rounds=3)
    assert calls == ["a", "b"] * 3
    assert rates == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_report_states_targets_and_which_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(perf.backend, "devices",
                        lambda: {"cpu": "test cpu", "cpu_count": 2, "gpus": []})
    figures = [perf.Figure("P1", "pipeline", 5.0, "x", ">= 4", True),
               perf.Figure("P2", "feed", 0.9, "x", ">= 0.95", False),
               perf.Figure("P4", "main job", None, "min", "<= 5 min", None, {"reason": "skip"})]
    perf.write_report(tmp_path, figures, {"load_average_before": (1.0, 1.0, 1.0),
                                          "load_average_after": (2.0, 2.0, 2.0)})
    md = (tmp_path / "perf.md").read_text()
    assert "| P1 " in md and ">= 4" in md and "holds" in md and "MISSED" in md
    assert "skipped" in md and "Targets held: P1; missed: P2." in md
    assert "test cpu (2 cores)" in md
    saved = json.loads((tmp_path / "perf.json").read_text())
    assert [f["verdict"] for f in saved["figures"]] == ["holds", "MISSED", "skipped"]
    assert saved["provenance"]["git"]["commit"]


@pytest.mark.slow
def test_gpu_run_wiring_on_cpu(tmp_path):
    """benchmarks/gpu_run.py waits for a lent GPU; --tiny (B0 at 32 px) keeps its code path
    from rotting: the paper run end to end (one mode) and the ISIC 2017 table (real images,
    when the shared copy is there; else generated ones are not a substitute: skipped)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    isic = repo.parent / "shared" / "data" / "isic2017"
    extra = ["--isic-dir", str(isic), "--isic-epochs", "1"] if (isic / "train").is_dir() else []
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "gpu_run.py"), "--tiny",
                           "--out", str(tmp_path / "out"), "--only", "paper-mixed_xla,isic",
                           "--budget", "1500", *extra],
                          capture_output=True, text=True, timeout=1600,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    found = json.loads((tmp_path / "out" / "gpu_run.json").read_text())
    paper = found["items"]["paper-mixed_xla"]
    assert paper["exit"] == 0 and paper["index_html"] and paper["n_train"] > 0
    assert paper["train_images_per_s"] > 0 and paper["inference_images_per_s"] > 0
    assert paper["backend"] == found["backend"]
    if extra:
        assert found["items"]["isic"]["exit"] == 0
        assert "AUC" in (tmp_path / "out" / "isic2017_gpu.md").read_text()
