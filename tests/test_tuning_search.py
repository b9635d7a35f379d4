"""Real keras-tuner searches on a tiny generated data set (B0 at 32 px, 1 epoch per trial).

Each trial builds and traces a new EfficientNet (~25-60 s on 2 shared CPU cores), so these
are marked slow: ``python -m pytest -m slow tests/test_tuning_search.py``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

SEARCH = {"epochs": 1, "head_units": {"min": 4, "max": 16, "step": 4},
          "dropout": {"min": 0.0, "max": 0.5, "step": 0.25},
          "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"}}


@pytest.fixture(scope="module")
def tune_config(tiny_config):
    """``tune_config(trials)``: the tiny config on 40 training images with a [tune] table of
    ``trials`` trials; ``trials=None`` leaves [tune] out, ``head`` sets the row's head."""
    def text(trials: int | None, head: str | None = None) -> str:
        row = {"name": "tiny", "preprocessing": "samplewise", **({"head": head} if head else {})}
        return tiny_config("tinytune", [row],
                           synthetic={"n_train_per_class": 20, "n_test_per_class": 4,
                                      "image_size": 40, "seed": 3},
                           defaults={"learning_rate": 1e-3, "bn_momentum": 0.5},
                           **({"tune": {"max_trials": trials, **SEARCH}} if trials else {}))
    return text


def tune_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "melanoma.cli.main", "tune", "--config", str(config),
            "--out", str(out), *extra]


def env(cache: Path) -> dict:
    return {**os.environ, "MELANOMA_DATA_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def trials_run(stderr: str) -> list[str]:
    """Trial numbers (1-based) that ran, from the one progress line per trial."""
    return re.findall(r"^trial (\d+)(?:/\d+)? done: ", stderr, flags=re.M)


def table(out: Path) -> list[dict]:
    return json.loads((out / "trials.json").read_text())["trials"]


@pytest.fixture(scope="module")
def setup(tune_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    config = root / "tiny.toml"
    config.write_text(tune_config(2))
    return {"root": root, "config": config, "env": env(root / "cache")}


@pytest.fixture(scope="module")
def full_search(setup):
    """One uninterrupted two-trial search."""
    out = setup["root"] / "full"
    started = time.perf_counter()
    done = subprocess.run(tune_cmd(setup["config"], out), env=setup["env"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "stderr": done.stderr, "seconds": time.perf_counter() - started}


def test_two_trial_search_completes_with_exact_val_auc(full_search):
    out, rows = full_search["out"], table(full_search["out"])
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert trials_run(full_search["stderr"]) == ["1", "2"]
    assert "Search: Running Trial" not in full_search["stderr"]  # keras-tuner's tables: -v only
    for name in ("trials.csv", "trials.md", "best_hyperparameters.json",
                 "objective_vs_hyperparameters.png", "head/oracle.json"):
        assert (out / name).is_file(), name
    # keras-tuner's objective is the value our ValidationMetrics callback logged
    logged = dict(re.findall(r"trial (\d+)/2 done: val_auc=([0-9.]+)", full_search["stderr"]))
    for row in rows:
        assert row["val_auc"] == pytest.approx(float(logged[str(row["trial"])]), abs=6e-5)
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["val_auc"] == max(r["val_auc"] for r in rows)


def test_killed_search_resumes_only_the_remaining_trial_with_same_results(setup, full_search):
    out = setup["root"] / "killed"
    proc = subprocess.Popen(tune_cmd(setup["config"], out), env=setup["env"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = out / "head" / "trial_0" / "trial.json"
    deadline = time.monotonic() + 500
    try:
        while time.monotonic() < deadline:  # wait until trial 0 is recorded and trial 1 runs
            if (out / "head" / "trial_1").is_dir() and first.is_file() and \
                    json.loads(first.read_text() or "{}").get("status") == "COMPLETED":
                break
            assert proc.poll() is None, "search ended before it could be interrupted"
            time.sleep(0.5)
        else:
            pytest.fail("trial 0 never finished")
        time.sleep(2)  # well inside trial 1 (building/tracing takes longer)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, killed_err = proc.communicate(timeout=60)
    assert trials_run(killed_err) == ["1"]
    assert not (out / "trials.json").exists()
    resumed = subprocess.run(tune_cmd(setup["config"], out), env=setup["env"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert trials_run(resumed.stderr) == ["2"]  # the first trial is not run again
    assert sorted(p.name for p in (out / "head").glob("trial_*")) == ["trial_0", "trial_1"]
    # same seed -> same trial sequence and the same scores, interrupted or not
    assert table(out) == table(full_search["out"])
    # a third run has nothing left to do
    again = subprocess.run(tune_cmd(setup["config"], out), env=setup["env"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and trials_run(again.stderr) == []


def test_run_with_tuned_head_uses_best_hyperparameters(setup, full_search, tune_config, tmp_path,
                                                       monkeypatch):
    from melanoma.cli.main import main

    best_path = full_search["out"] / "best_hyperparameters.json"
    best = json.loads(best_path.read_text())["hyperparameters"]
    config = tmp_path / "run.toml"
    config.write_text(tune_config(None, head=f"tuned:{best_path}"))
    monkeypatch.setenv("MELANOMA_DATA_CACHE", setup["env"]["MELANOMA_DATA_CACHE"])
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out"),
                 "--models-dir", str(tmp_path / "models")]) == 0
    row = json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    assert row["head_units"] == best["head_units"]
    assert row["dropout"] == pytest.approx(best["dropout"])
    assert row["learning_rate"] == pytest.approx(best["learning_rate"])
    assert row["head"] == f"tuned:{best_path}"
    sidecar = next((tmp_path / "models").rglob("*.json"))
    variant = json.loads(sidecar.read_text())["variant"]
    assert (variant["head_units"], variant["dropout"]) == (best["head_units"], best["dropout"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_run_each_trial_once(setup, tune_config, tmp_path):
    config = tmp_path / "tiny3.toml"
    config.write_text(tune_config(3))
    out, address = tmp_path / "dist", f"127.0.0.1:{free_port()}"
    chief = subprocess.Popen(tune_cmd(config, out, "--role", "chief", "--oracle", address),
                             env=setup["env"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(tune_cmd(config, out, "--role", "worker", "--oracle", address,
                                         "--worker-id", f"tuner{i}", "--connect-timeout", "120"),
                                env=setup["env"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        results = [p.communicate(timeout=900) for p in workers]
        chief_out, chief_err = chief.communicate(timeout=120)
    finally:
        for p in (chief, *workers):
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in workers] == [0, 0], [e[-2000:] for _, e in results]
    assert chief.returncode == 0, chief_err[-3000:]
    ran = sorted(t for _, err in results for t in trials_run(err))
    assert ran == ["1", "2", "3"]  # every trial exactly once, across both workers
    assert [r["status"] for r in table(out)] == ["COMPLETED"] * 3
    assert (out / "best_hyperparameters.json").is_file()


def test_memory_does_not_grow_trial_to_trial(setup, tune_config, tmp_path):
    """TensorFlow keeps ~300 MB per traced EfficientNet in a process (measured, even after
    clear_session, gc and malloc_trim), so ``--isolate`` runs each trial in a fresh child:
    the RSS printed after each trial then stays flat, and the search still completes."""
    config = tmp_path / "tiny3.toml"
    config.write_text(tune_config(3))
    done = subprocess.run(tune_cmd(config, tmp_path / "mem", "--isolate"), env=setup["env"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rss = [float(m) for m in re.findall(r"done: .* rss=(\d+) MB", done.stderr)]
    print("rss per trial (MB):", rss)
    assert len(rss) == 3 and max(rss) - min(rss) < 150, rss
    assert trials_run(done.stderr) == ["1", "2", "3"]
    assert [r["status"] for r in table(tmp_path / "mem")] == ["COMPLETED"] * 3
