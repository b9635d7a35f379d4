"""A killed `run` (SIGKILL mid-training, SIGTERM, SIGINT) rerun with the same arguments
finishes from its last saved epoch and writes exactly the outputs of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
name = "tiny_resume"
seed = 7

[data.synthetic]
n_train_per_class = 10
n_test_per_class = 6
image_size = 40
seed = 3

[defaults]
backbone = "B0"
image_size = 32
weights = "none"
epochs = 3
learning_rate = 1e-3
batch_size = 8
val_batch_size = 8
head_units = 8
bn_momentum = 0.5

[defaults.augmentation]
rotation_deg = 10.0
horizontal_flip = true

[evaluation]
bootstrap_resamples = 50

[[variants]]
name = "first"
preprocessing = "samplewise"

[[variants]]
name = "second"
preprocessing = "featurewise"
"""


def command(root: Path, out: str) -> list[str]:
    return [sys.executable, "-m", "melanoma.cli.main", "run", "--config", str(root / "c.toml"),
            "--out", str(root / out), "--models-dir", str(root / f"models_{out}")]


def environment(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "MELANOMA_DATA_CACHE": str(root / "cache"),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_until(root: Path, out: str, marker: str, sig: int) -> tuple[int, str]:
    """Start a run, send ``sig`` once ``marker`` appears on its stderr; (exit code, stderr)."""
    proc = subprocess.Popen(command(root, out), cwd=REPO, env=environment(root),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    lines += proc.stderr.read().splitlines(keepends=True)
    return proc.wait(timeout=120), "".join(lines)


def finish(root: Path, out: str) -> str:
    done = subprocess.run(command(root, out), cwd=REPO, env=environment(root), text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    (root / "c.toml").write_text(CONFIG)
    started = time.perf_counter()
    finish(root, "clean")  # the uninterrupted reference (also generates the data once)
    (root / "clean_seconds").write_text(str(time.perf_counter() - started))
    return root


def same_outputs(root: Path, out: str) -> None:
    for name in ("predictions.csv", "histories.json"):
        assert (root / out / name).read_bytes() == (root / "clean" / name).read_bytes(), name
    rows = [json.loads((root / o / "results.json").read_text())["rows"] for o in (out, "clean")]
    assert rows[0] == rows[1]
    assert not list((root / f"models_{out}").glob("*.partial"))  # checkpoints removed
    assert not list((root / out).rglob("*.tmp")) and not list((root / out).rglob(".*.lock"))


@pytest.mark.slow
def test_sigkill_during_second_variant_resumes_to_identical_outputs(root):
    code, err = run_until(root, "killed", "second epoch 1/3", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert list((root / "models_killed").glob("second-*.partial/state.npz"))
    err = finish(root, "killed")
    assert "first: loading" in err and "resuming after epoch 1/3" in err
    same_outputs(root, "killed")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_gives_identical_outputs(root):
    """Three SIGKILLs at seeded random moments of the run (training, saving a model, writing
    reports: wherever they fall), each followed by a rerun of the same command; the last
    rerun finishes, and the outputs equal the uninterrupted run's."""
    duration = float((root / "clean_seconds").read_text())
    delays = np.random.default_rng(2026).uniform(0.05, 0.95, size=3) * duration
    killed = 0
    for delay in delays:
        proc = subprocess.Popen(command(root, "random"), cwd=REPO, env=environment(root),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)
            killed += 1
    assert killed >= 1, f"no run was still going at {delays} s"
    finish(root, "random")
    same_outputs(root, "random")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_exit_with_one_line_and_resume(root, sig, code):
    out = f"sig{int(sig)}"
    status, err = run_until(root, out, "first epoch 2/3", sig)
    assert status == code, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("melanoma-bench: ")
    assert not list((root / f"models_{out}").rglob("*.tmp"))
    finish(root, out)
    same_outputs(root, out)


def test_checkpoint_resume_is_bit_identical_on_a_fresh_model(tmp_path):
    """Fast check of the mechanism on a tiny Dense model with BatchNorm, Dropout, a seeded
    reshuffle (each epoch's order a function of (seed, epoch)) and augmentation inside the
    model with its own seed generator: 1 epoch, stop, resume on a newly built model = 3
    epochs."""
    import keras
    import numpy as np
    import tensorflow as tf

    from melanoma.data.augmentation import Augmentation
    from melanoma.data.loader import array_batches
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models import training
    from melanoma.models.image_input import with_image_input

    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (17, 16, 16, 3), np.uint8), np.array([0, 1] * 8 + [0])
    pre, aug = get_preprocessing("samplewise"), Augmentation(rotation_deg=10.0,
                                                             horizontal_flip=True)
    val = array_batches(x, None, 8)

    def build():
        keras.utils.set_random_seed(7)
        network = keras.Sequential([
            keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(8, "relu"),
            keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
            keras.layers.Dense(2, activation="softmax")])
        return training.compile_classifier(with_image_input(network, aug, pre, seed=7), 1e-3)

    def train(model, **kwargs):
        data = array_batches(x, y, 8, shuffle=True, seed=7, repeat=True)
        return training.fit(model, data, val, y, 3, "t", **kwargs)

    class StopAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    reference = build()
    history = train(reference)
    train(build(), extra_callbacks=[StopAfterOneEpoch()], checkpoint_dir=tmp_path)
    resumed = build()
    assert train(resumed, checkpoint_dir=tmp_path) == history
    for a, b in zip(reference.variables, resumed.variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.path


def test_kill_while_saving_a_model_or_writing_a_report_leaves_no_partial_file(tmp_path):
    """An interrupt inside a model save or a report write: the previous files stay intact,
    no final name holds a partial file, no temporary file is left."""
    from melanoma.models import storage
    from melanoma.util import atomic

    class DiesWhileSaving:
        def save(self, path):
            Path(path).write_bytes(b"half a model")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage.save(DiesWhileSaving(), tmp_path, "v", "abc", {})
    assert list(tmp_path.iterdir()) == [] and storage.find(tmp_path, "abc") is None

    atomic.write_text(tmp_path / "results.md", "previous\n")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_open(tmp_path / "results.md") as f:
        f.write("half a report")
        raise KeyboardInterrupt
    assert (tmp_path / "results.md").read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]
