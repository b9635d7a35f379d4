"""Jobs shared across processes: per-job locks (claiming, waiting for a continuation's donor)
with fake jobs in real concurrent processes, and two `run --shard` processes that give the
same predictions.csv as one process with no job trained twice (slow: real training)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from melanoma.util import locks

ROOT = Path(__file__).resolve().parents[1]

CLAIM = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    from melanoma.runs import jobs
    from melanoma.util.keys import digest

    models, log, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    (ready / str(os.getpid())).write_text("")  # imported: tell the test, then start together
    while not (models / "go").exists():
        time.sleep(0.01)
    KEY = {f"k{i:02d}": digest({"job": i}) for i in range(6)}  # a key hashes its recipe
    NAME = {key: name for name, key in KEY.items()}
    plan = [jobs.Job(i, SimpleNamespace(name=f"v{i}"), 0, KEY[f"k{i:02d}"], f"job {i}",
                     donor_key=KEY["k00"] if i == 1 else None) for i in range(6)]
    plan.append(jobs.Job(6, SimpleNamespace(name="twin"), 0, KEY["k03"], "job 6"))  # as 3

    def train(job):
        with open(log, "a") as handle:
            handle.write(f"{NAME[job.key]} {os.getpid()} {time.time()}\\n")
        time.sleep(1.0 if NAME[job.key] == "k00" else 0.3)
        (models / f"{job.variant.name}-{job.key}.keras").write_text("model")
        (models / f"{job.variant.name}-{job.key}.json").write_text(json.dumps(
            {"t": time.time(), "preprocessing": "samplewise", "config_key": job.key,
             "recipe": {"job": int(NAME[job.key][1:])}}))

    state = jobs.JobState(models)
    left = jobs.work_through(plan, state, train)
    print(json.dumps({"left": [NAME[j.key] for j in left], "unsaved": len(jobs.unsaved(plan, state))}))
""")


def wait_until_both_ready(procs: list[subprocess.Popen], ready: Path, limit: float = 120) -> None:
    """Return once every process has written its file in ``ready``; fail if one exits first
    or the limit passes (imports take seconds on a loaded machine, never minutes)."""
    deadline = time.monotonic() + limit
    while len(list(ready.iterdir())) < len(procs):
        exited = [p.communicate() for p in procs if p.poll() is not None]
        assert not exited, exited
        assert time.monotonic() < deadline, "the processes never became ready"
        time.sleep(0.01)


def test_two_processes_claim_every_job_once_and_wait_for_a_donor(tmp_path):
    models, log, ready = tmp_path / "models", tmp_path / "trained.log", tmp_path / "ready"
    models.mkdir()
    ready.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(models), str(log), str(ready)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    wait_until_both_ready(procs, ready)  # a barrier: both imported and polling for "go"
    (models / "go").write_text("")
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    lines = [line.split() for line in log.read_text().splitlines()]
    keys = [key for key, _, _ in lines]
    assert sorted(keys) == [f"k{i:02d}" for i in range(6)]  # each model trained exactly once
    assert len({pid for _, pid, _ in lines}) == 2  # and the work was shared
    started = {key: float(t) for key, _, t in lines}
    assert started["k01"] >= started["k00"] + 1.0  # k01 continues k00: it waited for it
    last = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert any(r["unsaved"] == 0 for r in last)  # the last to finish sees every model saved
    assert not list(models.glob(".job-*.lock"))  # every job lock released


def test_a_job_lock_of_a_live_process_is_skipped_and_a_dead_ones_taken(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / ".job-k.lock"
        path.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        assert locks.held_by_other(path)["pid"] == holder.pid
        assert not locks.try_lock(path)
    finally:
        holder.kill()
        holder.wait()
    assert locks.held_by_other(path) is None and locks.try_lock(path)  # dead holder
    assert locks.held_by_other(path) is None  # held by this process, not by another
    locks.release(path)
    assert not path.exists()


def test_same_plan_joins_the_output_folder_and_another_plan_fails(tmp_path):
    from melanoma.util.errors import UserError

    mine = locks.acquire_or_join(tmp_path, "plan-a")
    assert mine is not None
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        locks.release(mine)
        (tmp_path / locks.LOCK_NAME).write_text(json.dumps(
            {"pid": holder.pid, "host": os.uname().nodename, "plan": "plan-a"}))
        assert locks.acquire_or_join(tmp_path, "plan-a") is None  # the same job set: join
        with pytest.raises(UserError, match="in use by another run"):
            locks.acquire_or_join(tmp_path, "plan-b")
    finally:
        holder.kill()
        holder.wait()




def _run(tmp_path: Path, tag: str, *extra) -> subprocess.Popen:
    args = ["run", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / f"out-{tag}"),
            "--models-dir", str(tmp_path / f"models-{tag}"), *extra]
    code = f"import sys; from melanoma.cli.main import main; sys.exit(main({args!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MELANOMA_DATA_CACHE": str(tmp_path / "data")}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.mark.slow
def test_two_shards_give_the_predictions_of_one_process_training_each_job_once(tmp_path,
                                                                                four_job_config):
    (tmp_path / "c.toml").write_text(four_job_config)
    one = _finish(_run(tmp_path, "one"))
    assert one.count(": training 1 epochs") == 4
    shards = [_run(tmp_path, "shared", "--shard", f"{i}/2") for i in (1, 2)]
    errs = [_finish(p) for p in shards]
    trained = [line.split(": training")[0].split("] ", 1)[1]
               for err in errs for line in err.splitlines() if ": training 1 epochs" in line]
    assert sorted(trained) == ["nat seed 5", "nat seed 6", "sw seed 5", "sw seed 6"]
    assert all(err.count(": training 1 epochs") == 2 for err in errs)  # 2 jobs a shard
    reference = (tmp_path / "out-one" / "predictions.csv").read_bytes()
    assert (tmp_path / "out-shared" / "predictions.csv").read_bytes() == reference
    assert (tmp_path / "out-shared" / "val_predictions.csv").read_bytes() == (
        tmp_path / "out-one" / "val_predictions.csv").read_bytes()
    # a final plain run only loads and reports
    again = _finish(_run(tmp_path, "shared"))
    assert "training" not in again and again.count("loading") == 4
    assert (tmp_path / "out-shared" / "predictions.csv").read_bytes() == reference
