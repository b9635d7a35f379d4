"""melanoma.models.tensorboard: event files read back with TensorBoard's own reader; MLflow (runs.tracking)."""
import sys
import types

import numpy as np
import pytest

from melanoma.models import tensorboard as tb
from melanoma.runs import tracking
from melanoma.util.errors import UserError


def read_scalars(run_folder) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(run, tag) -> [(step, value)] as TensorBoard's EventAccumulator reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    found = {}
    for run in ("train", "validation"):
        if not (run_folder / run).is_dir():
            continue
        acc = EventAccumulator(str(run_folder / run), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            found[(run, tag)] = [(e.step, float(make_ndarray(e.tensor_proto)))
                                 for e in acc.Tensors(tag)]
    return found


def expected_scalars(history):
    return {tb.SERIES[k][:2]: [(i + 1, float(np.float32(v))) for i, v in enumerate(values)]
            for k, values in history.items() if k in tb.SERIES}


def random_history(seed: int, epochs: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    history = {k: list(rng.random(epochs)) for k in tb.SERIES}
    history["lr"] = [1e-3] * epochs  # not a TensorBoard series: ignored
    return history


def test_write_history_reads_back_every_epoch(tmp_path):
    history = random_history(0, 5)
    folder = tb.write_history(tmp_path, "b0_samplewise", 3, history)
    assert folder == tmp_path / "b0_samplewise" / "seed-3"
    scalars = read_scalars(folder)
    assert set(scalars) == {(run, tag) for run in ("train", "validation")
                            for tag in ("epoch/loss", "epoch/accuracy", "epoch/auc")}
    assert scalars == expected_scalars(history)


def test_rewriting_replaces_instead_of_duplicating(tmp_path):
    tb.write_history(tmp_path, "v", 0, random_history(1, 4))
    second = random_history(2, 3)
    folder = tb.write_history(tmp_path, "v", 0, second)
    assert read_scalars(folder) == expected_scalars(second)
    assert len(list(folder.glob("train/events.out.tfevents.*"))) == 1


def test_unsafe_variant_names_are_refused(tmp_path):
    with pytest.raises(UserError, match="safe name"):
        tb.write_history(tmp_path, "../escape", 0, random_history(0, 1))


def test_live_callback_writes_what_fit_returns(tmp_path):
    """Tiny dense model through training.fit: the callback's events equal the returned
    history, whose val_auc is the exact AUC added by ValidationMetrics."""
    import keras

    from melanoma.data.loader import array_batches
    from melanoma.models import training

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=64) > 0).astype(int)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    training.compile_classifier(model, 0.05, jit_compile=False)
    train = array_batches(x[:48], y[:48], 16, repeat=True)  # the loader, over an array
    val = array_batches(x[48:], None, 16)
    callback = tb.TensorBoardScalars(tmp_path, "tiny", 7)
    history = training.fit(model, train, val, y[48:], epochs=3, label="tiny",
                           extra_callbacks=[callback])
    live = read_scalars(tmp_path / "tiny" / "seed-7")
    assert live == expected_scalars({k: history[k] for k in tb.SERIES})
    from sklearn.metrics import roc_auc_score
    p = model.predict(val, verbose=0)[:, 1]
    assert live[("validation", "epoch/auc")][-1][1] == pytest.approx(
        roc_auc_score(y[48:], p), abs=1e-6)


class FakeMlflow(types.ModuleType):
    """Records the calls the adapter makes (the real package is optional)."""

    def __init__(self):
        super().__init__("mlflow")
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs)) or self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.calls.append(("end_run", (), {}))


def test_mlflow_logger_is_off_by_default_and_logs_every_epoch_when_on(monkeypatch):
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    history = {"loss": [0.7, 0.5], "val_auc": [0.6, 0.8]}
    assert tracking.MlflowLogger().log_history("v", 1, history) is False and fake.calls == []
    logger = tracking.MlflowLogger(enabled=True, experiment="bench", tracking_uri="file:/x")
    assert logger.log_history("v", 1, history, params={"epochs": 2}) is True
    names = [c[0] for c in fake.calls]
    assert names[:4] == ["set_tracking_uri", "set_experiment", "start_run", "log_params"]
    assert fake.calls[2][2] == {"run_name": "v-seed1"}
    assert fake.calls[3][1][0] == {"variant": "v", "seed": 1, "epochs": 2}
    metrics = [(c[1][0], c[1][1], c[2]["step"]) for c in fake.calls if c[0] == "log_metric"]
    assert metrics == [("loss", 0.7, 1), ("loss", 0.5, 2), ("val_auc", 0.6, 1),
                       ("val_auc", 0.8, 2)]
    assert names[-1] == "end_run"


def test_mlflow_missing_is_a_warning_not_an_error(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    assert tracking.MlflowLogger(enabled=True).log_history("v", 0, {"loss": [1.0]}) is False
    assert "mlflow is not installed" in caplog.text


def test_mlflow_failure_is_a_warning_and_the_run_goes_on(monkeypatch, caplog):
    """MLflow 3 refuses a file store without an opt-in (found running the real package):
    the tracking failure is one warning line, never a traceback that loses the report."""
    fake = FakeMlflow()

    def refuse(*args, **kwargs):
        raise RuntimeError("The filesystem tracking backend is in maintenance mode.\nmore")

    fake.start_run = refuse
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    assert tracking.MlflowLogger(enabled=True).log_history("v", 0, {"loss": [1.0]}) is False
    assert "MLflow logging failed (RuntimeError: The filesystem tracking backend is in " \
           "maintenance mode.); the run goes on without it" in caplog.text
    assert "more" not in caplog.text


def test_real_mlflow_round_trip(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3.x: file store opt-in
    logger = tracking.MlflowLogger(enabled=True, experiment="t", tracking_uri=tmp_path.as_uri())
    assert logger.log_history("v", 2, {"val_auc": [0.5, 0.75]})
    client = mlflow.tracking.MlflowClient(tracking_uri=tmp_path.as_uri())
    run = client.search_runs([client.get_experiment_by_name("t").experiment_id])[0]
    values = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_auc")]
    assert sorted(values) == [(1, 0.5), (2, 0.75)]


def test_run_logs_every_track_with_epochs_and_replaces_an_earlier_runs(tmp_path):
    """runs.tracking: one folder per (variant, seed[, fold]) from saved histories."""
    from melanoma import config
    from melanoma.runs import tracking

    cfg = config.from_dict({"name": "t", "variants": [{"name": "v"}]})
    stale = tmp_path / "tensorboard" / "gone" / "seed-1"
    stale.mkdir(parents=True)
    one, two = random_history(3, 2), random_history(4, 3)
    folder = tracking.write_tensorboard(tmp_path, cfg, [("v", 1, 0, one), ("v", 1, 2, two),
                                                        ("w", 1, 0, {})])
    assert folder == tmp_path / "tensorboard" and not stale.exists()
    assert read_scalars(folder / "v" / "seed-1") == expected_scalars(one)
    assert read_scalars(folder / "v" / "seed-1" / "fold-2") == expected_scalars(two)
    assert not (folder / "w").exists()  # a model file's row has no history
    off = config.from_dict({"name": "t", "tensorboard": False, "variants": [{"name": "v"}]})
    assert tracking.write_tensorboard(tmp_path, off, [("v", 1, 0, one)]) is None
    assert not folder.exists()


def test_mlflow_logs_only_newly_trained_jobs_when_switched_on(monkeypatch):
    from melanoma import config
    from melanoma.config import run_keys
    from melanoma.runs import jobs, tracking

    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setattr(run_keys, "installed", lambda name: True)
    raw = {"name": "exp", "variants": [{"name": "v", "epochs": 3}]}
    cfg = config.from_dict(raw)
    job = jobs.Job(0, cfg.variants[0], 42, "k", "[1/1] v")
    assert tracking.log_mlflow(cfg, job, {"loss": [1.0]}) is False and fake.calls == []
    cfg = config.from_dict({**raw, "mlflow": True})
    assert tracking.log_mlflow(cfg, job, {"val_auc": [0.5, 0.7]}) is True
    calls = {c[0]: c for c in fake.calls}
    assert calls["set_experiment"][1] == ("exp",)
    assert calls["start_run"][2] == {"run_name": "v-seed42"}
    assert calls["log_params"][1][0]["epochs"] == 3
    assert [c[1][1] for c in fake.calls if c[0] == "log_metric"] == [0.5, 0.7]
