"""Hostile and careless inputs (issue 11): each is a one-line error (exit 2) naming the file
and what to do, or works; none is a traceback, a hang or a half-written report.

Runs use a few-weight stand-in for EfficientNet (``tiny_model``): the code under test is the
run's plumbing (files, names, caches, locks), not the backbone, so each run takes seconds.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.cli.main import main

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
CAFE = os.fsdecode(b"dup_caf\xe9.jpg")  # a Latin-1 name: not UTF-8


@pytest.fixture(scope="module")
def hostile_config(tiny_config) -> str:
    """The tiny config, for data given by --data-dir."""
    return tiny_config("hostile", synthetic=None, defaults={"learning_rate": 1e-3},
                       evaluation={"bootstrap_resamples": 20})


@pytest.fixture(scope="module")
def tiny_model():
    """``build_classifier`` replaced by a few-weight model with the same input and output."""
    import keras

    from melanoma.models import factory

    def build(backbone, image_size, *args, **kwargs):
        inputs = keras.Input((image_size, image_size, 3))
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))

    patch = pytest.MonkeyPatch()
    patch.setattr(factory, "build_classifier", build)
    yield
    patch.undo()


def smooth_jpeg(seed: int, quality: int = 95, size: int = 48) -> bytes:
    """A smooth random image (its average hash survives re-encoding, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_args(hostile_config):
    """``run_args(folder, data, config=hostile_config, *extra)``: a `run` of ``config`` on
    ``data``, its config, output and models in ``folder``."""
    def args(tmp_path: Path, data: Path, config: str | None = None, *extra: str) -> list[str]:
        path = tmp_path / "tiny.toml"
        path.write_text(config or hostile_config)
        return ["run", "--config", str(path), "--data-dir", str(data), "--out",
                str(tmp_path / "out"), "--models-dir", str(tmp_path / "models"), *extra]
    return args


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------
# item 2: non-UTF-8 file names in the audit, in evaluate, and as the output folder

def near_duplicate_set(image_set, root: Path) -> Path:
    """A small set whose test/Benign holds a non-UTF-8-named re-encoded copy of a train image."""
    image_set(root, n=6, test_n=3)
    (root / "train" / "Benign" / "source.jpg").write_bytes(smooth_jpeg(1))
    (root / "test" / "Benign" / CAFE).write_bytes(smooth_jpeg(1, quality=60))
    (root / "test" / "Malignant" / os.fsdecode(b"empty\xff.jpg")).write_bytes(b"")
    return root


def test_audit_names_a_non_utf8_near_duplicate_escaped(image_set, tmp_path, capsys):
    root = near_duplicate_set(image_set, tmp_path / "data")
    out = tmp_path / "audit"
    assert main(["audit", str(root), "--out", str(out)]) == 0
    pairs = (out / "audit_pairs.csv").read_text(encoding="utf-8")
    assert "dup_caf\\xe9.jpg" in pairs and "source.jpg" in pairs
    summary = json.loads((out / "audit_summary.json").read_text(encoding="utf-8"))
    assert summary["test_with_duplicate_in_train_or_val"] >= 1
    assert any(f.endswith("empty\\xff.jpg") for f in summary["unreadable_files"])
    assert (out / "audit_pairs.png").stat().st_size > 0


def test_run_with_a_non_utf8_near_duplicate_completes(image_set, run_args, tmp_path, tiny_model,
                                                      capsys):
    root = near_duplicate_set(image_set, tmp_path / "data")
    assert main(run_args(tmp_path, root)) == 0
    out = tmp_path / "out"
    clean = (out / "clean_test.csv").read_text(encoding="utf-8")
    assert "test/Benign/dup_caf\\xe9.jpg,0" in clean  # named escaped, and not clean
    assert "dup_caf\\xe9.jpg" in (out / "audit_pairs.csv").read_text(encoding="utf-8")
    assert "dup_caf\\xe9.jpg" in (out / "predictions.csv").read_text(encoding="utf-8")
    assert json.loads((out / "results.json").read_text())["audit"]["n_test_clean"] >= 1


def test_evaluate_non_utf8_model_test_file_and_folder_names(jpeg_bytes, tmp_path, capsys):
    root = tmp_path / "data"
    for cls in ("Benign", "Malignant"):
        (root / "test" / cls).mkdir(parents=True)
        for i in range(2):
            (root / "test" / cls / f"{i}.jpg").write_bytes(jpeg_bytes(size=32))
    (root / "test" / "Benign" / os.fsdecode(b"na\xefve.jpg")).write_bytes(jpeg_bytes(size=32))
    model = tmp_path / os.fsdecode(b"mod\xe8le_samplewise.h5")  # its stem names the row
    model.write_bytes((LEGACY / "tiny_efficientnet_samplewise.h5").read_bytes())
    out = tmp_path / os.fsdecode(b"r\xe9sultats")
    assert main(["evaluate", str(model), "--data-dir", str(root / "test"), "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))["rows"]
    assert rows[0]["variant"] == "mod\\xe8le_samplewise"
    assert "Benign/na\\xefve.jpg" in (out / "predictions.csv").read_text(encoding="utf-8")
    assert "r\\xe9sultats" in (out / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def saved_run_once(fake_predictions, tmp_path_factory) -> Path:
    """A run folder written from generated predictions (no model, no TensorFlow)."""
    from melanoma.evaluation.rows import EvalSettings
    from melanoma.reporting import run_report

    out = tmp_path_factory.mktemp("saved") / "run"
    test, val = fake_predictions(40), fake_predictions(30, seed=1, prefix="train")
    run_report.write_run(out, test, {n: {"spec": f"spec of {n}"} for n in "abc"},
                     {"a": {"loss": [0.7, 0.5], "val_loss": [0.8, 0.6]}}, {"seed": 3}, val,
                     EvalSettings(seed=3, bootstrap_resamples=20), set(test["file"][::2]),
                     {"n_test": 40, "n_test_clean": 20})
    return out


@pytest.fixture
def saved_run(saved_run_once, tmp_path) -> Path:
    """A fresh copy of ``saved_run_once`` for a test to damage or rebuild."""
    import shutil

    return Path(shutil.copytree(saved_run_once, tmp_path / "run"))


def test_report_into_a_non_utf8_folder(saved_run, tmp_path, capsys):
    out = tmp_path / os.fsdecode(b"copy\xff")
    assert main(["report", str(saved_run), "--out", str(out)]) == 0
    assert "copy\\xff" in (out / "index.html").read_text(encoding="utf-8")  # the page's title


# ----------------------------------------------------------------------------------------
# item 4: figure file names never collide

def test_figure_slugs_differ_for_different_names():
    from melanoma.reporting.figures import slug

    assert slug("a/b") != slug("a_b") and "/" not in slug("a/b")
    assert slug("模型甲") != slug("模型乙")


# ----------------------------------------------------------------------------------------
# item 5 and 10: a damaged or tampered cached model -> one line, the file, what to do

@pytest.fixture(scope="module")
def trained_once(image_set, run_args, tmp_path_factory, tiny_model):
    """One finished tiny run (its models folder is copied by ``cached_run``)."""
    base = tmp_path_factory.mktemp("trained")
    root = image_set(base / "data", n=6, test_n=3)
    assert main(run_args(base, root)) == 0
    return base


@pytest.fixture
def cached_run(run_args, trained_once, tmp_path):
    """A copy of the finished run's models: the arguments that load it, and its two files."""
    import shutil

    shutil.copytree(trained_once / "models", tmp_path / "models")
    args = run_args(tmp_path, trained_once / "data")
    (model,) = sorted((tmp_path / "models").glob("*.keras"))
    return {"args": args, "model": model, "sidecar": model.with_suffix(".json")}


def _edit_sidecar(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


DAMAGE = {
    "truncated model": ("model", lambda p: p.write_bytes(p.read_bytes()[:3000]), "damaged"),
    "empty model": ("model", lambda p: p.write_bytes(b""), "damaged"),
    "corrupt sidecar": ("sidecar", lambda p: p.write_text('{"variant": {"na'), "not valid JSON"),
    "sidecar not a dict": ("sidecar", lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    "tampered mean": ("sidecar", lambda p: _edit_sidecar(
        p, preprocessing="featurewise", featurewise_mean=[0.5, 0.5]), "featurewise_mean"),
    "tampered key": ("sidecar", lambda p: _edit_sidecar(p, config_key="0" * 16), "config_key"),
    "tampered preprocessing": ("sidecar", lambda p: _edit_sidecar(p, preprocessing="native"),
                               "preprocessing"),
    "tampered history": ("sidecar", lambda p: _edit_sidecar(p, history={"loss": "x"}),
                         "history"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_cached_model_is_one_line_naming_the_file(cached_run, capsys, one_line_error, case):
    which, damage, problem = DAMAGE[case]
    damage(cached_run[which])
    capsys.readouterr()
    assert main(cached_run["args"]) == 2
    one_line_error(str(cached_run[which]), problem, "--retrain",
                   f"delete {cached_run[which]}")
    if case in ("truncated model", "corrupt sidecar"):
        assert main([*cached_run["args"], "--retrain"]) == 0  # the hint works


def test_evaluate_says_what_is_wrong_with_a_tampered_sidecar(cached_run, tmp_path, capsys):
    _edit_sidecar(cached_run["sidecar"], preprocessing="featurewise", featurewise_mean=[1, 2])
    data = cached_run["args"][cached_run["args"].index("--data-dir") + 1]
    capsys.readouterr()
    assert main(["evaluate", str(cached_run["model"]), "--data-dir", data,
                 "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "featurewise_mean" in err and str(cached_run["sidecar"]) in err
    assert "in user code" not in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------
# item 6: a diverging run stops with one line naming the variant and the epoch

def test_nan_loss_stops_with_the_variant_and_epoch(image_set, run_args, tmp_path, tiny_model,
                                                  monkeypatch, one_line_error):
    import keras

    from melanoma.models import training

    def nan_loss(y_true, y_pred):
        return keras.ops.mean(y_pred) * float("nan")

    def compile_nan(model, learning_rate, *args):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=nan_loss)
        return model

    monkeypatch.setattr(training, "compile_classifier", compile_nan)
    root = image_set(tmp_path / "data", n=6, test_n=3)
    previous = tmp_path / "out"
    previous.mkdir()
    (previous / "results.json").write_text('{"rows": []}')  # an earlier run's report
    before = files_of(previous)
    # --overwrite: the earlier report may be replaced, yet a diverged run writes nothing
    assert main([*run_args(tmp_path, root), "--overwrite"]) == 2
    one_line_error("tiny", "diverged", "epoch 1", "learning_rate")
    assert files_of(previous) == before  # no half-written report
    assert not (tmp_path / "models").exists()  # nor a saved model, nor an empty folder


def test_divergence_guard_stops_fit_on_nan():
    import keras

    from melanoma.models.training import DivergenceGuard
    from melanoma.util.errors import UserError

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.full((8, 3), np.nan, np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    with pytest.raises(UserError, match=r"v_native: training diverged in epoch 1 .*loss nan"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[DivergenceGuard("v_native")])


# ----------------------------------------------------------------------------------------
# item 7: `report` on malformed saved files: one line naming the file and the problem

def _csv_edit(name: str, edit):
    def apply(run: Path) -> None:
        path = run / name
        lines = path.read_text().splitlines()
        path.write_text("\n".join(edit(lines)) + "\n")
    return apply


def _cell(line: str, column: int, value: str) -> str:
    cells = line.split(",")
    cells[column] = value
    return ",".join(cells)


MALFORMED = {
    "nan probability": (_csv_edit("predictions.csv", lambda ls: [ls[0], _cell(ls[1], 3, "nan"),
                                                               *ls[2:]]),
                        "predictions.csv", "line 2"),
    "missing column": (_csv_edit("predictions.csv", lambda ls: [
        ",".join(line.split(",")[:3]) for line in ls]), "predictions.csv", "prob_malignant"),
    "label x": (_csv_edit("predictions.csv", lambda ls: [ls[0], _cell(ls[1], 3, "x"), *ls[2:]]),
                "predictions.csv", "'x'"),
    "empty cell": (_csv_edit("predictions.csv", lambda ls: [ls[0], *ls[1:5],
                                                          _cell(ls[5], 1, ""), *ls[6:]]),
                   "predictions.csv", "line 6"),
    "duplicate row": (_csv_edit("predictions.csv", lambda ls: [*ls, ls[1]]),
                      "predictions.csv", "twice"),
    "nan in val": (_csv_edit("val_predictions.csv", lambda ls: [ls[0], _cell(ls[1], 3, ""),
                                                              *ls[2:]]),
                   "val_predictions.csv", "line 2"),
    "truncated results": (lambda run: (run / "results.json").write_text(
        (run / "results.json").read_text()[:200]), "results.json", "not valid JSON"),
    "mistyped results": (lambda run: (run / "results.json").write_text(
        '{"rows": 3, "evaluation": {"seed": "x"}}'), "results.json", "evaluation"),
    "results a list": (lambda run: (run / "results.json").write_text("[]"),
                       "results.json", "JSON object"),
    "corrupt histories": (lambda run: (run / "histories.json").write_text('{"a": {"loss": '),
                          "histories.json", "not valid JSON"),
    "mistyped histories": (lambda run: (run / "histories.json").write_text('{"a": [1, 2]}'),
                           "histories.json", "'a'"),
    "clean list without clean": (_csv_edit("clean_test.csv", lambda ls: [
        line.split(",")[0] for line in ls]), "clean_test.csv", "clean"),
    "clean list with 7": (_csv_edit("clean_test.csv", lambda ls: [ls[0], _cell(ls[1], 1, "7"),
                                                                *ls[2:]]),
                          "clean_test.csv", "line 2"),
    "binary predictions": (lambda run: (run / "predictions.csv").write_bytes(b"\xff\xfe\0\0" * 9),
                           "predictions.csv", "predictions.csv"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_report_on_malformed_files_is_one_line(saved_run, tmp_path, one_line_error, case):
    damage, name, problem = MALFORMED[case]
    damage(saved_run)
    before = files_of(saved_run)
    assert main(["report", str(saved_run)]) == 2
    one_line_error(str(saved_run / name), problem)
    assert files_of(saved_run) == before  # nothing rewritten from bad inputs


# ----------------------------------------------------------------------------------------
# item 8: FIFOs never hang `check`, `run` or `evaluate`

def _finishes(target, *args, fifo: Path, seconds: float = 20):
    """Run ``target(*args)`` in a thread; if it blocks on ``fifo``, unblock it and fail."""
    import threading

    result = {}

    def call():
        try:
            result["value"] = target(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            result["error"] = error

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # release the blocked reader
        os.close(fd)
        thread.join(30)
        pytest.fail(f"blocked on the FIFO {fifo}")
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_fifo_in_a_class_folder_is_counted_not_opened(image_set, tmp_path, capsys):
    from melanoma.data import layout, preflight

    root = image_set(tmp_path / "data", n=3, test_n=2)
    fifo = root / "train" / "Benign" / "pipe.jpg"
    os.mkfifo(fifo)
    report = _finishes(preflight.scan, layout.discover(root), fifo=fifo)
    assert report.warnings.get("special_files") == 1
    assert "pipe.jpg" in " ".join(report.examples["special_files"])
    assert fifo not in layout.discover(root).train.files  # never read by run either
    assert _finishes(main, ["check", str(root)], fifo=fifo) == 0
    assert _finishes(main, ["check", str(root), "--strict"], fifo=fifo) == 2


def test_fifo_as_a_model_file_is_refused(tmp_path, capsys):
    from melanoma.models import loading
    from melanoma.util.errors import UserError

    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        _finishes(loading.detect_format, fifo, fifo=fifo)


# ----------------------------------------------------------------------------------------
# item 9: unusable output places -> one line, exit 2; `report X --out X` spelled otherwise

@pytest.mark.parametrize("flag", ["--out", "--models-dir"])
@pytest.mark.parametrize("case", ["a file", "lock is a folder", "read-only"])
def test_unusable_output_places_are_one_line(image_set, run_args, tmp_path, monkeypatch, one_line_error,
                                            flag, case):
    import errno

    from melanoma.util import locks

    if case == "lock is a folder" and flag == "--models-dir":
        pytest.skip("run locks each job in the models folder, not the folder itself")
    root = image_set(tmp_path / "data", n=6, test_n=3)
    args = run_args(tmp_path, root)
    place = Path(args[args.index(flag) + 1])
    if case == "a file":
        place.write_text("I am a file")
    elif case == "lock is a folder":
        (place / locks.LOCK_NAME).mkdir(parents=True)
    else:
        place.mkdir()
        place.chmod(0o555)
        if os.geteuid() == 0:  # root ignores modes: refuse as a read-only place would
            real = Path.write_text

            def refuse(self, *a, **k):
                if self.parent == place:
                    raise PermissionError(errno.EACCES, "Permission denied", str(self))
                return real(self, *a, **k)
            monkeypatch.setattr(Path, "write_text", refuse)
    assert main(args) == 2
    one_line_error(str(place))


def test_report_in_place_spelled_another_way(saved_run, capsys):
    before = json.loads((saved_run / "results.json").read_text())["rows"]
    other = saved_run / ".." / saved_run.name
    assert main(["report", str(saved_run), "--out", str(other)]) == 0
    assert main(["report", str(saved_run.resolve()), "--out",
                 os.path.relpath(saved_run, Path.cwd())]) == 0
    assert json.loads((saved_run / "results.json").read_text())["rows"] == before


def test_full_disk_is_one_line_and_keeps_previous_results(saved_run, monkeypatch, one_line_error):
    import errno

    results = saved_run / "results.json"
    saved = json.loads(results.read_text())
    saved["evaluation"]["bootstrap_resamples"] = 30  # a rebuild would change every interval
    results.write_text(json.dumps(saved))
    before = files_of(saved_run)

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)  # the figures fit, then the first text file fails
    assert main(["report", str(saved_run)]) == 2
    one_line_error("No space left on device", str(saved_run / "index.html"))
    after = files_of(saved_run)
    for name in ("results.json", "results.csv", "results.md", "index.html", "predictions.csv"):
        assert after[name] == before[name], name
    assert not [p for p in saved_run.iterdir() if ".tmp-" in p.name]  # no temp file left


# ----------------------------------------------------------------------------------------
# item 10: evaluate and report take the lock; code in a model file is refused up front

@pytest.mark.parametrize("command", ["report", "report elsewhere", "evaluate"])
def test_evaluate_and_report_respect_a_live_runs_lock(saved_run, tmp_path, one_line_error, command):
    import socket
    import subprocess
    import sys

    from melanoma.util import locks

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (saved_run / locks.LOCK_NAME).write_text(json.dumps(
            {"pid": holder.pid, "host": socket.gethostname(), "started": "then"}))
        before = files_of(saved_run)
        args = {"report": ["report", str(saved_run)],
                "report elsewhere": ["report", str(saved_run), "--out", str(tmp_path / "copy")],
                "evaluate": ["evaluate", str(LEGACY / "tiny_efficientnet_samplewise.h5"),
                             "--data-dir", str(LEGACY / "images"), "--out", str(saved_run),
                             "--overwrite"]}  # another experiment's folder: the lock decides
        assert main(args[command]) == 2
        one_line_error(f"pid {holder.pid}")
        assert files_of(saved_run) == before and not (tmp_path / "copy").exists()
    finally:
        holder.kill()
        holder.wait()


def test_lambda_model_file_row_is_refused_before_any_training(image_set, run_args, hostile_config,
                                                              tmp_path, one_line_error):
    root = image_set(tmp_path / "data", n=6, test_n=3)
    config = hostile_config + f"""
[[variants]]
name = "lambda_file"
model_file = "{LEGACY / 'lambda_layer.h5'}"
preprocessing = "samplewise"
"""
    assert main(run_args(tmp_path, root, config)) == 2
    one_line_error("lambda_layer.h5", "Lambda layer", "--trust-model-code")
    assert not (tmp_path / "models").exists() and not (tmp_path / "out").exists()
