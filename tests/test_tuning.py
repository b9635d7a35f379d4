"""Fast checks of head tuning: [tune] validation, tuned heads in run configs, results files,
bad tuner directories and unreachable chiefs. No model is trained here (see
test_tuning_search.py for the searches, marked slow)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from melanoma import config
from melanoma.cli.main import main
from melanoma.util.errors import UserError

BASE = """
name = "t"
seed = 5
[defaults]
backbone = "B0"
image_size = 32
weights = "none"
head_units = 8
[[variants]]
name = "a"
preprocessing = "samplewise"
"""


def load(text: str, tmp_path: Path) -> config.RunConfig:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(path)


def test_tune_table_defaults_and_seed(tmp_path):
    cfg = load(BASE + "[tune]\nmax_trials = 2\n", tmp_path)
    assert cfg.tune.max_trials == 2 and cfg.tune.seed == 5 and cfg.tune.algorithm == "random"
    assert load(BASE, tmp_path).tune is None


@pytest.mark.parametrize("table, message", [
    ("max_trials = 0", "max_trials must be a positive integer"),
    ("algorithm = \"grid\"", "unknown algorithm 'grid'"),
    ("algoritm = \"random\"", "did you mean 'algorithm'"),
    ("[tune.head_units]\nmin = 64\nmax = 32", "inverted range"),
    ("[tune.dropout]\nmin = 0.2\nmax = 0.2", "empty range"),
    ("[tune.dropout]\nmin = 0.0\nmax = 1.0", "below 1.0"),
    ("[tune.learning_rate]\nmin = 0.0\nmax = 0.1\nsampling = \"log\"", "at least"),
    ("[tune.head_units]\nmin = 8\nmax = 64\ndefault = 128", "outside"),
    ("variant = \"b\"", "unknown variant 'b'"),
    ("algorithm = \"hyperband\"\nepochs = 1", "hyperband needs epochs"),
])
def test_bad_tune_tables_are_one_line_user_errors(tmp_path, table, message):
    with pytest.raises(UserError, match=message) as error:
        load(BASE + "[tune]\n" + table + "\n", tmp_path)
    assert "\n" not in str(error.value)


def test_bad_tune_table_exits_2_from_cli(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(BASE + "[tune]\nmax_trials = 0\n")
    assert main(["tune", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["melanoma-bench: error: tune: max_trials must be a positive integer, got 0"]


def write_best(path: Path, **values) -> Path:
    path.write_text(json.dumps({"trial": "1", "val_auc": 0.9, "hyperparameters": values}))
    return path


def test_tuned_head_resolves_into_the_variant(tmp_path):
    write_best(tmp_path / "best.json", head_units=48, dropout=0.25, learning_rate=3e-4)
    plain = load(BASE, tmp_path).variants[0]
    tuned = load(BASE.replace('preprocessing = "samplewise"',
                              'preprocessing = "samplewise"\nhead = "tuned:best.json"'),
                 tmp_path).variants[0]  # relative to the config's folder
    assert (tuned.head_units, tuned.dropout, tuned.learning_rate) == (48, 0.25, 3e-4)
    assert tuned.head == "tuned:best.json"
    key = dict(data_fingerprint="d", seed=1, val_fraction=0.15, interpolation="nearest")
    assert tuned.model_key(**key) != plain.model_key(**key)  # tuned values change the cache key


def test_tuned_head_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load(BASE.replace('preprocessing = "samplewise"', 'head = "tuned:missing.json"'),
             tmp_path)
    write_best(tmp_path / "best.json", head_units=48, dropout=0.25, learning_rate=3e-4)
    with pytest.raises(UserError, match="either head"):
        load(BASE.replace('preprocessing = "samplewise"',
                          'head = "tuned:best.json"\nhead_units = 4'), tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="no hyperparameters"):
        load(BASE.replace('preprocessing = "samplewise"', 'head = "tuned:bad.json"'), tmp_path)


class FakeTrial:
    def __init__(self, trial_id, status, score, values):
        from keras_tuner import HyperParameters

        self.trial_id, self.status, self.score, self.best_step = trial_id, status, score, 0
        self.hyperparameters = HyperParameters()
        self.hyperparameters.values = values


class FakeOracle:
    def __init__(self, trials):
        self.trials = {t.trial_id: t for t in trials}

    def get_best_trials(self, n):
        done = sorted((t for t in self.trials.values() if t.status == "COMPLETED"),
                      key=lambda t: -t.score)
        return done[:n]


def test_results_table_plot_and_best_json(tmp_path):
    from melanoma.tuning import hypermodel as tuning

    oracle = FakeOracle([
        FakeTrial("0", "COMPLETED", 0.7, {"head_units": 8, "dropout": 0.0, "learning_rate": 1e-3}),
        FakeTrial("1", "COMPLETED", 0.9, {"head_units": 16, "dropout": 0.5, "learning_rate": 1e-4}),
        FakeTrial("2", "FAILED", None, {"head_units": 4, "dropout": 0.25, "learning_rate": 1e-2}),
    ])
    results = tuning.write_results(tmp_path, oracle, {"seed": 1})
    assert [r["status"] for r in results["rows"]] == ["COMPLETED", "COMPLETED", "FAILED"]
    best = json.loads((tmp_path / "best_hyperparameters.json").read_text())
    assert best["trial"] == 2 and best["trial_id"] == "1"  # shown 1-based, keras-tuner's id kept
    assert best["hyperparameters"]["head_units"] == 16
    for name in ("trials.json", "trials.csv", "trials.md", "objective_vs_hyperparameters.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "FAILED" in (tmp_path / "trials.md").read_text()
    cfg_text = BASE.replace('preprocessing = "samplewise"',
                            f'head = "tuned:{tmp_path / "best_hyperparameters.json"}"')
    assert load(cfg_text, tmp_path).variants[0].head_units == 16


def test_corrupted_tuner_directory_is_refused_and_kept(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + "[tune]\nmax_trials = 2\n")
    project = tmp_path / "out" / "head"
    (project / "trial_0").mkdir(parents=True)
    (project / "trial_0" / "trial.json").write_text('{"trial_id": "0", "status": "COMPLETED"}')
    (project / "oracle.json").write_text('{"ongoing_trials": {')  # truncated write
    assert main(["tune", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "corrupted: oracle.json" in err and "Nothing was deleted" in err
    assert (project / "trial_0" / "trial.json").exists() and (project / "oracle.json").exists()


def test_changed_search_needs_restart(tmp_path):
    from melanoma.tuning import hypermodel as tuning

    cfg = load(BASE + "[tune]\nmax_trials = 2\n", tmp_path)
    tuning.check_same_search(tmp_path, cfg.tune, cfg.variants[0], restart=False)
    tuning.check_same_search(tmp_path, cfg.tune, cfg.variants[0], restart=False)  # same: ok
    other = load(BASE + "[tune]\nmax_trials = 3\n", tmp_path)
    with pytest.raises(UserError, match="different \\[tune\\]"):
        tuning.check_same_search(tmp_path, other.tune, other.variants[0], restart=False)


def test_worker_without_chief_fails_fast_and_clearly(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + "[tune]\nmax_trials = 2\n")
    started = time.perf_counter()
    code = main(["tune", "--config", str(cfg), "--out", str(tmp_path / "o"), "--role", "worker",
                 "--oracle", f"127.0.0.1:{port}", "--connect-timeout", "2"])
    assert code == 2 and time.perf_counter() - started < 30
    assert f"cannot reach the tuning chief at 127.0.0.1:{port} after 2 s" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--role", "worker"], "needs both --role"),
    (["--oracle", "nohost"], "needs both --role"),
    (["--role", "chief", "--oracle", "nohost"], "--oracle must be HOST:PORT"),
])
def test_distributed_flags_are_checked(tmp_path, capsys, argv, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + "[tune]\nmax_trials = 2\n")
    assert main(["tune", "--config", str(cfg), "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_mirrored_strategy_only_with_several_gpus():
    from melanoma.util import backend

    assert backend.distribution(count=0) is None
    assert backend.distribution(count=1) is None


def test_hypermodel_build_mixed_precision_keeps_float32_output():
    """build() declares the space, seeds, applies the dtype policy and compiles (no training)."""
    import keras
    import keras_tuner as kt

    from melanoma.models import image_input
    from melanoma.tuning import hypermodel as tuning

    cfg = config.from_dict({"seed": 3, "defaults": {"backbone": "B0", "image_size": 32,
                                                    "weights": "none"},
                            "variants": [{"name": "a"}],
                            "tune": {"mixed_precision": True, "jit_compile": False,
                                     "tune_freeze_backbone": True}})
    hypermodel = tuning.HeadHyperModel(cfg.variants[0], cfg.tune)
    hp = kt.HyperParameters()
    try:
        model = hypermodel.build(hp)
        network = image_input.network_of(model)  # the input layer in front, then the network
        assert set(hp.values) == {"head_units", "dropout", "learning_rate", "freeze_backbone"}
        assert network.get_layer("head_dense").compute_dtype == "float16"
        assert network.get_layer("head_softmax").compute_dtype == "float32"
        assert model.output.dtype == "float32"
        assert model.jit_compile is False
    finally:
        keras.config.set_dtype_policy("float32")


def test_unreadable_oracle_state_is_refused_and_kept(tmp_path, capsys, monkeypatch):
    """Valid JSON that keras-tuner cannot reload: one line, exit 2, nothing deleted."""
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + "[data.synthetic]\nn_train_per_class = 4\nn_test_per_class = 2\n"
                   "image_size = 32\n[tune]\nmax_trials = 2\n")
    project = tmp_path / "out" / "head"
    project.mkdir(parents=True)
    (project / "oracle.json").write_text("{}")
    (project / "tuner0.json").write_text("{}")
    assert main(["tune", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed" in err and "Nothing was deleted" in err
    assert (project / "oracle.json").read_text() == "{}"


@pytest.mark.parametrize("algorithm, oracle", [("random", "RandomSearchOracle"),
                                               ("bayesian", "BayesianOptimizationOracle"),
                                               ("hyperband", "HyperbandOracle")])
def test_each_algorithm_makes_its_tuner(tmp_path, algorithm, oracle):
    """The tuner builds the search space once (no training) with the configured budget."""
    from melanoma.tuning import hypermodel as tuning

    cfg = config.from_dict({"seed": 3, "defaults": {"backbone": "B0", "image_size": 32,
                                                    "weights": "none"},
                            "variants": [{"name": "a"}],
                            "tune": {"algorithm": algorithm, "max_trials": 2, "epochs": 4}})
    tuner = tuning.make_tuner(tuning.HeadHyperModel(cfg.variants[0], cfg.tune), tmp_path)
    assert type(tuner.oracle).__name__ == oracle
    assert tuner.oracle.objective.name == "val_auc" and tuner.oracle.objective.direction == "max"
    assert tuner.oracle.seed == 3
    if algorithm == "hyperband":
        assert tuner.oracle.max_epochs == 4
    else:
        assert tuner.oracle.max_trials == 2
    assert {p.name for p in tuner.oracle.get_space().space} == {"head_units", "dropout",
                                                                "learning_rate"}


def test_trials_per_process_must_be_positive(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + "[tune]\nmax_trials = 2\n")
    assert main(["tune", "--config", str(cfg), "--trials-per-process", "0"]) == 2
    assert "--trials-per-process must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("project", ["..", ".", "/x", "a/../..", "../..", "a/b", ""])
def test_restart_with_an_escaping_project_touches_nothing_outside_out(tmp_path, capsys, project):
    """Issue 11, item 1: `project = ".."` once made `tune --restart` delete the parent of --out."""
    parent = tmp_path / "reports"
    keep = parent / "other-run" / "results.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}")
    out = parent / "tune"
    (out / "head").mkdir(parents=True)
    (out / "head" / "oracle.json").write_text("{}")
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + f"[tune]\nmax_trials = 2\nproject = {json.dumps(project)}\n")
    assert main(["tune", "--config", str(cfg), "--out", str(out), "--restart"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "project must be a safe name" in err[0]
    assert keep.read_text() == "{}" and (out / "head" / "oracle.json").exists()


def test_deletions_are_confined_to_the_named_folder(tmp_path):
    from melanoma.util.names import confined

    assert confined(tmp_path / "out" / "head", tmp_path / "out") == (tmp_path / "out" / "head")
    for escaping in (tmp_path / "out" / "..", tmp_path / "out", tmp_path / "out" / "a" / ".." / ".."):
        with pytest.raises(UserError, match="not inside"):
            confined(escaping, tmp_path / "out")


def test_a_missing_tuner_dependency_is_one_line(monkeypatch):
    """Without TensorFlow, keras-tuner's undeclared ``six`` can be missing: tune says what to
    install instead of a traceback."""
    import sys

    import melanoma.tuning
    from melanoma.tuning.search import run_tuning

    monkeypatch.delitem(sys.modules, "melanoma.tuning.hypermodel", raising=False)
    monkeypatch.delattr(melanoma.tuning, "hypermodel", raising=False)  # re-imported, not reused
    monkeypatch.setitem(sys.modules, "six", None)  # import six -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    with pytest.raises(UserError, match=r"^tune needs keras-tuner and what it imports: .*"
                                        r"\(pip install (six|keras_tuner)\)$"):
        run_tuning(None)
