"""Issue #12: a `run` killed with SIGKILL right after its first job's model is saved, then
started again with the same command on the same models folder, does not retrain that job,
is not blocked by the dead process's locks, finishes the other jobs and writes exactly the
predictions of an uninterrupted single-process run (slow: real training).

Exact equality is what the code guarantees on one machine: every job is seeded, CPU ops are
deterministic, and a pooled model is reset to its seeded initial state (models.training.
ModelPool), so a job trained first in a fresh process equals the same job trained after
another (docs/determinism.md); tests/test_sharing.py relies on the same guarantee.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from melanoma.util import locks

ROOT = Path(__file__).resolve().parents[1]
# conftest's four_job_config: 2 variants x 2 seeds = 4 jobs, 1 epoch, 32 px
TRAINED = ": training 1 epochs"


def start(tmp_path: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    """``melanoma-bench run`` in a subprocess on ``out-<tag>`` and ``models-<tag>``; its
    stderr goes to a file (a pipe nobody reads could block it)."""
    args = ["run", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / f"out-{tag}"),
            "--models-dir", str(tmp_path / f"models-{tag}")]
    code = f"import sys; from melanoma.cli.main import main; sys.exit(main({args!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MELANOMA_DATA_CACHE": str(tmp_path / "data"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tmp_path / f"{tag}-{time.time_ns()}.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=handle)
    return proc, log


def finish(tmp_path: Path, tag: str) -> str:
    proc, log = start(tmp_path, tag)
    assert proc.wait(timeout=1500) == 0, log.read_text()[-3000:]
    return log.read_text()


def kill_after_first_model(tmp_path: Path, tag: str) -> dict[Path, int]:
    """Start a run, SIGKILL it as soon as a model's sidecar (written last: the model is
    complete) appears; {saved model file: mtime_ns} at that moment."""
    proc, log = start(tmp_path, tag)
    models = tmp_path / f"models-{tag}"
    deadline = time.monotonic() + 1200
    while not list(models.glob("*.json")):
        assert proc.poll() is None, f"the run ended before saving a model:\n{log.read_text()}"
        assert time.monotonic() < deadline, "no model saved in 20 min"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    return {p.with_suffix(".keras"): p.with_suffix(".keras").stat().st_mtime_ns
            for p in models.glob("*.json")}


@pytest.mark.slow
def test_sigkill_after_the_first_saved_model_then_rerun_resumes_without_retraining(
        tmp_path, four_job_config):
    (tmp_path / "c.toml").write_text(four_job_config)
    reference = finish(tmp_path, "one")  # uninterrupted, one process (also makes the data)
    assert reference.count(TRAINED) == 4
    saved = kill_after_first_model(tmp_path, "killed")
    out, models = tmp_path / "out-killed", tmp_path / "models-killed"
    assert 1 <= len(saved) < 4
    # the dead process left its output-folder lock (and maybe a job lock) behind
    assert (out / locks.LOCK_NAME).is_file()
    err = finish(tmp_path, "killed")
    for model, mtime in saved.items():  # not retrained: the very same files
        assert model.stat().st_mtime_ns == mtime, model
    assert err.count(TRAINED) == 4 - len(saved)
    assert err.count(": loading") == len(saved)
    first = next(iter(saved)).name.rsplit("-", 1)[0]  # "sw" (seed 5 is the first job)
    assert f"{first} seed 5: loading" in err and f"{first} seed 5{TRAINED}" not in err
    for name in ("predictions.csv", "val_predictions.csv"):
        assert (out / name).read_bytes() == (tmp_path / "out-one" / name).read_bytes(), name
    assert not list(models.glob(".job-*.lock")) and not (out / locks.LOCK_NAME).exists()
    assert not list(models.glob("*.partial")) and len(list(models.glob("*.keras"))) == 4


def test_a_saved_jobs_lock_left_by_a_dead_process_is_removed_not_retrained(tmp_path):
    """Fast check of what the slow test found: a SIGKILL between saving a model and releasing
    its job lock (or removing its checkpoint folder) left them behind; a later process removes
    them without training."""
    import json
    from types import SimpleNamespace

    from melanoma.runs import jobs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from melanoma.util.keys import digest

    recipes = {"k1": {"job": "v"}, "k2": {"job": "w"}}  # a model key hashes its recipe
    k1, k2 = digest(recipes["k1"]), digest(recipes["k2"])
    models = tmp_path / "models"
    models.mkdir()
    (models / f"v-{k1}.keras").write_text("model")
    (models / f"v-{k1}.json").write_text(json.dumps({"preprocessing": "samplewise",
                                                      "config_key": k1, "recipe": recipes["k1"]}))
    lock = jobs.lock_path(models, k1)
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    other_host = jobs.lock_path(models, k2)
    other_host.write_text(json.dumps({"pid": dead.pid, "host": "elsewhere"}))
    (models / f"w-{k2}.keras").write_text("model")
    (models / f"w-{k2}.json").write_text(json.dumps({"preprocessing": "samplewise",
                                                      "config_key": k2, "recipe": recipes["k2"]}))
    for stale in (f"v-{k1}.partial", f"w-{k2}.partial"):  # killed after saving, before clean-up
        (models / stale).mkdir()
        (models / stale / "state.npz").write_text("epoch")
    trained = []
    plan = [jobs.Job(0, SimpleNamespace(name="v"), 0, k1, "job 0"),
            jobs.Job(1, SimpleNamespace(name="w"), 0, k2, "job 1")]
    assert jobs.work_through(plan, jobs.JobState(models), trained.append) == []
    assert trained == [] and not lock.exists() and not (models / f"v-{k1}.partial").exists()
    assert other_host.exists()  # another host's process cannot be checked: left alone
    assert (models / f"w-{k2}.partial").exists()  # nor its checkpoints
