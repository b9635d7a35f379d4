"""The perf suite and the prepared GPU run, run as a user runs them (a subprocess from the
repository root; nothing under benchmarks/ is imported here). No timing is judged: the
default tier rebuilds a perf report from a saved perf.json; the slow tier runs gpu_run.py
--tiny on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAVED = {
    "figures": [
        {"name": "P1", "what": "pipeline", "value": 5.0, "unit": "x", "target": ">= 4",
         "holds": True, "details": {}, "verdict": "holds"},
        {"name": "P2", "what": "feed", "value": 0.9, "unit": "x", "target": ">= 0.95",
         "holds": False, "details": {}, "verdict": "MISSED"},
        {"name": "P4", "what": "main job", "value": None, "unit": "min", "target": "<= 5 min",
         "holds": None, "details": {"reason": "--skip-main-job"}, "verdict": "skipped"}],
    "provenance": {"hardware": {"cpu": "test cpu", "cpu_count": 2, "gpus": []},
                   "git": {"commit": "0123456789abcdef"}, "date": "2026-12-01T00:00:00Z",
                   "load_average_before": [1.0, 1.0, 1.0], "load_average_after": [2.0, 2.0, 2.0]},
}


def perf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.perf", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_report_states_targets_and_which_hold(tmp_path):
    """perf.md is made from perf.json as saved: ``--report-only`` rebuilds it, measuring
    nothing, and exits 1 because a target was missed."""
    saved = json.dumps(SAVED, indent=1)
    (tmp_path / "perf.json").write_text(saved)
    done = perf("--report-only", "--out", str(tmp_path))
    assert done.returncode == 1, done.stderr
    md = (tmp_path / "perf.md").read_text()
    assert done.stdout.strip() == md.strip()
    assert "| P1 " in md and ">= 4" in md and "holds" in md and "MISSED" in md
    assert "skipped" in md and "Targets held: P1; missed: P2." in md
    assert "test cpu (2 cores)" in md and "commit 0123456789ab," in md
    assert "before/after: 1.0/2.0 on 2 cores" in md
    assert (tmp_path / "perf.json").read_text() == saved  # the results are not rewritten


def test_report_only_without_saved_results_is_one_line(tmp_path):
    done = perf("--report-only", "--out", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("benchmarks.perf: error: --report-only: no perf.json in")
    assert not (tmp_path / "perf.md").exists()


@pytest.mark.slow
def test_gpu_run_wiring_on_cpu(tmp_path):
    """benchmarks/gpu_run.py waits for a lent GPU; --tiny (B0 at 32 px) keeps its code path
    from rotting: the paper run end to end (one mode) and the ISIC 2017 table (real images,
    when the shared copy is there; else generated ones are not a substitute: skipped)."""
    repo = ROOT
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
