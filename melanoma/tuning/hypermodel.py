"""Head tuning with keras-tuner: the HyperModel, the tuner factory, results and distribution.

    melanoma-bench tune --config benchmarks/configs/tune.toml --out reports/tune

The HyperModel searches the head (units, dropout), the learning rate and optionally whether
the backbone is frozen, on top of one config variant. The objective is ``val_auc``, the
exact malignant-class AUC that ``training.ValidationMetrics`` writes into the epoch logs
(keras-tuner reads the History and its own callbacks after ours, so it sees that value).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np

from melanoma.config import VariantConfig
from melanoma.config.tune import TuneConfig
from melanoma.util import atomic
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)

OBJECTIVE = "val_auc"
SEARCHED = ("head_units", "dropout", "learning_rate", "freeze_backbone")


def rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux /proc), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _default(r, base_value):
    """The range's default, else the base variant's value when inside the range, else min."""
    if r.default is not None:
        return r.default
    return base_value if r.min <= base_value <= r.max else r.min


class HeadHyperModel(kt.HyperModel):
    """The base variant's classifier whose head and learning rate are hyperparameters.

    ``build`` makes the trial's variant (the base variant with the sampled head, dropout,
    learning rate and freezing) and builds it exactly as ``run`` does
    (``training.build_model``: seeded, dtype policy, the input layer), compiled with
    the config's ``jit_compile``. ``fit`` is ``training.train_job``: the same class weights,
    balanced sampling, augmentation, exact validation metrics and divergence guard as
    ``run``, with keras-tuner's callbacks after ours (so they see ``val_auc``).
    """

    def __init__(self, variant: VariantConfig, tune: TuneConfig, splits=None,
                 preprocessing=None, data_seed: int = 0):
        super().__init__(name="melanoma_head")
        if tune.seed is None:
            raise ValueError("TuneConfig.seed must be resolved (parse_tune does it)")
        self.variant, self.tune = variant, tune
        self.splits, self.preprocessing, self.data_seed = splits, preprocessing, data_seed
        self.trial_variant = variant

    def sampled_variant(self, hp) -> VariantConfig:
        """The base variant with this trial's hyperparameters (declared here, with defaults)."""
        t, v = self.tune, self.variant
        units = hp.Int("head_units", int(t.head_units.min), int(t.head_units.max),
                       step=int(t.head_units.step) if t.head_units.step else None,
                       sampling=t.head_units.sampling,
                       default=int(_default(t.head_units, v.head_units)))
        dropout = hp.Float("dropout", t.dropout.min, t.dropout.max, step=t.dropout.step,
                           sampling=t.dropout.sampling, default=_default(t.dropout, v.dropout))
        learning_rate = hp.Float("learning_rate", t.learning_rate.min, t.learning_rate.max,
                                 step=t.learning_rate.step, sampling=t.learning_rate.sampling,
                                 default=_default(t.learning_rate, v.learning_rate))
        frozen = (hp.Boolean("freeze_backbone", default=v.freeze_backbone)
                  if t.tune_freeze_backbone else v.freeze_backbone)
        return dataclasses.replace(v, head_units=units, dropout=dropout,
                                   learning_rate=learning_rate, freeze_backbone=frozen,
                                   mixed_precision=t.mixed_precision, jit_compile=t.jit_compile)

    def build(self, hp):
        from melanoma.models import training

        self.trial_variant = v = self.sampled_variant(hp)
        model = training.build_model(v, self.tune.seed, self.preprocessing)
        return training.compile_classifier(model, v.learning_rate, jit_compile=v.jit_compile)

    def fit(self, hp, model, *args, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        from melanoma.models import training

        label = f"trial {getattr(self, 'current_trial', '?')}"
        started = time.perf_counter()
        history = training.train_job(model, self.trial_variant, self.splits, self.preprocessing,
                                     self.data_seed, label, extra_callbacks=callbacks,
                                     initial_epoch=initial_epoch,
                                     epochs=epochs or self.tune.epochs,
                                     epoch_level=logging.DEBUG)
        memory = rss_mb()
        values = "  ".join(f"{k}={_short(v)}" for k, v in hp.values.items()
                           if not k.startswith("tuner/"))
        log.info("%s done: %s=%.4f  %s  (%.0f s%s)", label, OBJECTIVE,
                 max(history[OBJECTIVE]), values, time.perf_counter() - started,
                 f", rss={memory:.0f} MB" if memory else "")
        result = keras.callbacks.History()  # keras-tuner reads the best epoch from it
        result.history = history
        result.epoch = list(range(len(history[OBJECTIVE])))
        return result


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_number(trial_id) -> int | str:
    """keras-tuner's trial id ("00", "01", ...) as the 1-based number users see."""
    text = str(trial_id)
    return int(text) + 1 if text.isdigit() else text


class ProcessBudgetSpent(Exception):
    """This process ran its ``trials_per_process``; trials remain for the next process."""


class _TrialLabel:
    """Mixin: tell the HyperModel which trial runs (progress lines), and stop the search
    loop cleanly after ``trials_per_process`` trials (None: no limit).

    TensorFlow keeps ~300 MB per traced EfficientNet in the process (measured: B0 at 32 px,
    even after clear_session, gc and malloc_trim), so long searches run a few trials per
    process and resume in a fresh one.
    """

    trials_per_process: int | None = None
    _trials_done = 0

    def pre_create_trial(self):
        if self.trials_per_process is not None and self._trials_done >= self.trials_per_process:
            raise ProcessBudgetSpent()
        super().pre_create_trial()

    def on_trial_begin(self, trial):
        total = getattr(self.hypermodel.tune, "max_trials", None)
        number = trial_number(trial.trial_id)
        algorithm = getattr(self.hypermodel.tune, "algorithm", "")
        self.hypermodel.current_trial = (f"{number}/{total}" if total and algorithm != "hyperband"
                                         else f"{number}")
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self._trials_done += 1


def _tuner_class(algorithm: str):
    base = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization,
            "hyperband": kt.Hyperband}[algorithm]
    return type(base.__name__, (_TrialLabel, base), {})


def make_tuner(hypermodel: HeadHyperModel, directory: Path, overwrite: bool = False,
               strategy=None, trials_per_process: int | None = None):
    """The configured keras-tuner tuner over ``directory/<project>`` (resumes unless
    ``overwrite``)."""
    t = hypermodel.tune
    objective = kt.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, seed=t.seed, directory=str(directory),
                  project_name=t.project, overwrite=overwrite, distribution_strategy=strategy)
    if t.algorithm == "hyperband":
        budget = dict(max_epochs=t.epochs, factor=t.hyperband_factor,
                      hyperband_iterations=t.hyperband_iterations)
    else:
        budget = dict(max_trials=t.max_trials)
    tuner = _tuner_class(t.algorithm)(hypermodel, **budget, **common)
    tuner.trials_per_process = trials_per_process
    if hasattr(tuner.oracle, "_display"):  # keras-tuner's own tables only with -v (debug)
        tuner.oracle.verbose = 1 if log.isEnabledFor(logging.DEBUG) else 0
    return tuner


# ---- distributed tuning: keras-tuner's chief/worker mode ---------------------------------

def parse_oracle(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), or a UserError."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--oracle must be HOST:PORT (e.g. 127.0.0.1:8000), got {address!r}")
    return host, int(port)


def set_distributed_env(role: str, address: str, worker_id: str | None = None) -> str:
    """Set the KERASTUNER_* variables for ``role``; returns the tuner id."""
    host, port = parse_oracle(address)
    tuner_id = "chief" if role == "chief" else (
        worker_id or f"tuner-{socket.gethostname()}-{os.getpid()}")
    if role != "chief" and "chief" in tuner_id:
        raise UserError(f"--worker-id {tuner_id!r}: a worker id must not contain 'chief'")
    os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host,
                      KERASTUNER_ORACLE_PORT=str(port))
    return tuner_id


def clear_distributed_env() -> None:
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        os.environ.pop(key, None)


def wait_for_chief(address: str, timeout_s: float) -> None:
    """Block until the chief's oracle answers at ``address``; UserError after ``timeout_s``.

    keras-tuner's own client waits up to an hour per call; bound that as well.
    """
    import grpc
    from keras_tuner.src.distribute import oracle_client

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise UserError(f"cannot reach the tuning chief at {address} after {timeout_s:g} s: "
                        f"start `melanoma-bench tune --role chief --oracle {address}` first, "
                        f"or check the address and firewall (--connect-timeout to wait "
                        f"longer)") from None
    finally:
        channel.close()
    oracle_client.TIMEOUT = max(float(timeout_s), 30.0)


# ---- the tuner directory -------------------------------------------------------------------

def check_project_dir(project_dir: Path) -> None:
    """Refuse a corrupted keras-tuner directory with one clear line; never delete anything."""
    files = [project_dir / "oracle.json", *sorted(project_dir.glob("tuner*.json")),
             *sorted(project_dir.glob("chief.json")),
             *sorted(project_dir.glob("trial_*/trial.json"))]
    for path in files:
        if not path.exists():
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(
                f"tuner directory {project_dir} is corrupted: {path.relative_to(project_dir)} "
                f"is unreadable ({type(error).__name__}: {str(error).splitlines()[0]}). Nothing "
                f"was deleted: finished trials stay in trial_*/trial.json. Repair or move that "
                f"file, or rerun with --restart to start the search over (deletes {project_dir})"
            ) from None


def check_same_search(out_dir: Path, tune: TuneConfig, variant: VariantConfig,
                      restart: bool) -> None:
    """A rerun resumes only the same search; a changed [tune] table needs --restart."""
    path = out_dir / "search.json"
    current = {"tune": tune.digest(), "variant": variant.model_key("", 0, 0.0, "")}
    if path.exists() and not restart:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            saved = None
        if saved != current:
            raise UserError(f"{out_dir} holds a search with a different [tune] table or base "
                            f"variant: use another --out, or --restart to start over")
    atomic.write_json(path, current)


# ---- results ---------------------------------------------------------------------------

def trial_rows(oracle) -> list[dict]:
    """One flat row per trial (id, status, objective, hyperparameters), in start order."""
    rows = []
    for trial_id in sorted(oracle.trials, key=lambda i: (len(i), i)):
        trial = oracle.trials[trial_id]
        score = trial.score if trial.score is not None else None
        row = {"trial": trial_number(trial_id), "trial_id": trial_id, "status": trial.status,
               OBJECTIVE: None if score is None or np.isnan(score) else float(score),
               "best_epoch": trial.best_step}
        row.update({k: _plain(v) for k, v in trial.hyperparameters.values.items()})
        rows.append(row)
    return rows


def tuning_plot(path: Path, rows: list[dict], names: list[str], objective: str) -> Path:
    """One panel per hyperparameter: the objective of each completed trial against it."""
    from matplotlib.figure import Figure

    from melanoma.reporting.figures import save_figure

    done = [r for r in rows if r.get(objective) is not None]
    fig = Figure(figsize=(3.6 * max(len(names), 1), 3.2))
    for i, name in enumerate(names, 1):
        ax = fig.add_subplot(1, max(len(names), 1), i)
        xs = [float(r[name]) for r in done if r.get(name) is not None]
        ys = [r[objective] for r in done if r.get(name) is not None]
        ax.scatter(xs, ys, color="tab:blue")
        for x, y, r in zip(xs, ys, [r for r in done if r.get(name) is not None]):
            ax.annotate(str(r["trial"]), (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        if name == "learning_rate" and xs and min(xs) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(objective if i == 1 else "")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{objective} (exact malignant-class AUC) per trial")
    return save_figure(fig, path)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def best_hyperparameters(oracle) -> dict | None:
    """The best completed trial's id, objective and hyperparameters (None if none finished)."""
    done = [t for t in oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if not done:
        return None
    trial = done[0]
    values = {k: _plain(v) for k, v in trial.hyperparameters.values.items()
              if not k.startswith("tuner/")}
    return {"trial": trial_number(trial.trial_id), "trial_id": trial.trial_id,
            OBJECTIVE: float(trial.score), "hyperparameters": values}


def write_results(out_dir: Path, oracle, info: dict) -> dict:
    """trials.json/csv/md, objective_vs_hyperparameters.png and best_hyperparameters.json."""
    import pandas as pd
    from tabulate import tabulate

    rows = trial_rows(oracle)
    best = best_hyperparameters(oracle)
    atomic.write_json(out_dir / "trials.json", {"trials": rows, "best": best, "provenance": info})
    frame = pd.DataFrame(rows)
    with atomic.atomic_open(out_dir / "trials.csv", "w", newline="", encoding="utf-8") as handle:
        frame.to_csv(handle, index=False, float_format="%.9g")
    atomic.write_text(out_dir / "trials.md", tabulate(frame, headers="keys", tablefmt="github",
                                                      showindex=False, floatfmt=".4g") + "\n")
    if best is not None:
        atomic.write_json(out_dir / "best_hyperparameters.json",
                          {**best, "provenance": info})
        tuning_plot(out_dir / "objective_vs_hyperparameters.png", rows,
                    [k for k in SEARCHED if k in frame.columns], OBJECTIVE)
    return {"rows": rows, "best": best}
