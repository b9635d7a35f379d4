"""``melanoma-bench tune``: search the classifier head with keras-tuner, resumable.

    melanoma-bench tune --config tune --out reports/tune
    melanoma-bench tune ... --role chief  --oracle 10.0.0.1:8000      # one chief
    melanoma-bench tune ... --role worker --oracle 10.0.0.1:8000 --worker-id tuner0

From Python: ``melanoma.tune_head("tune", out_dir="reports/tune")``.
State lives in ``OUT/<project>/`` in keras-tuner's own layout; a rerun resumes it.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from melanoma import config as config_mod
from melanoma.data import layout
from melanoma.data.splits import limited, load_splits, resolve_data_dir
from melanoma.util import backend, provenance
from melanoma.util.errors import UserError
from melanoma.util.names import confined

log = logging.getLogger(__name__)
ROLES = ("chief", "worker")


def base_variant(cfg: config_mod.RunConfig) -> config_mod.VariantConfig:
    """The variant whose backbone, data, preprocessing and augmentation the search uses."""
    name = cfg.tune.variant
    return next(v for v in cfg.variants if v.name == name) if name else cfg.variants[0]


def _data(cfg, variant, data_dir: Path | None):
    """(splits, fitted preprocessing) of the base variant: what ``run`` trains it on."""
    from melanoma.data.cache import fit_preprocessing
    from melanoma.data.preprocessing import get_preprocessing

    found = limited(layout.discover(resolve_data_dir(cfg, data_dir)), cfg.data.limit)
    log.info("data: %s (train %d files)", found.root, len(found.train))
    splits = load_splits(found, variant.resolved_image_size(), cfg)
    train = splits.train
    prep = fit_preprocessing(get_preprocessing(variant.preprocessing), train.cache, train.index)
    return splits, prep


def _start_over(project_dir: Path, out_dir: Path) -> None:
    if project_dir.exists():
        target = confined(project_dir, out_dir)  # never the parent of --out, never --out itself
        log.info(f"--restart: deleting {target}")
        shutil.rmtree(target)
    (out_dir / "search.json").unlink(missing_ok=True)


def _check_roles(cfg, role: str | None, oracle: str | None) -> None:
    if cfg.tune is None:
        raise UserError(f"config {cfg.source or cfg.name} has no [tune] table "
                        f"(see melanoma/configs/tune.toml)")
    if (role is None) != (oracle is None):
        raise UserError("distributed tuning needs both --role chief|worker and --oracle HOST:PORT")
    if role is not None and role not in ROLES:
        raise UserError(f"--role must be chief or worker, got {role!r}")


def _prepare_state(tuning, cfg, variant, out_dir: Path, project_dir: Path, restart: bool,
                   role: str | None, oracle: str | None, connect_timeout: float) -> None:
    """Reach the chief (a worker), or start over / check the saved search (the chief)."""
    if role == "worker":
        if restart:
            raise UserError("--restart belongs to the chief (workers never delete state)")
        tuning.wait_for_chief(oracle, connect_timeout)
    elif restart:
        _start_over(project_dir, out_dir)
    tuning.check_project_dir(project_dir)
    if role != "worker":
        tuning.check_same_search(out_dir, cfg.tune, variant, restart)


def _search(tuning, hypermodel, cfg, variant, out_dir, project_dir, strategy, role, oracle,
            worker_id, trials_per_process):
    """Run the keras-tuner search; returns the tuner, or None when the process budget ended."""
    if role:
        tuner_id = tuning.set_distributed_env(role, oracle, worker_id)
        log.info(f"tune: {role} {tuner_id!r}, oracle at {oracle}")
    try:
        tuner = _open_tuner(tuning, hypermodel, out_dir, project_dir, strategy,
                            trials_per_process)
        log.info(f"tune: {cfg.tune.algorithm} search of {variant.name} ({cfg.tune.epochs} epochs per "
            f"trial) in {project_dir}")
        try:
            tuner.search(epochs=cfg.tune.epochs)
        except tuning.ProcessBudgetSpent:
            log.info(f"tune: {trials_per_process} trial(s) done in this process; trials remain")
            return None
        return tuner
    finally:
        if role:
            tuning.clear_distributed_env()
        import keras

        keras.config.set_dtype_policy("float32")


def run_tuning(cfg: config_mod.RunConfig, data_dir: Path | None = None,
               out_dir: Path | None = None, restart: bool = False, role: str | None = None,
               oracle: str | None = None, worker_id: str | None = None,
               connect_timeout: float = 300.0, trials_per_process: int | None = None
               ) -> dict | None:
    """Run (or resume) the configured search; returns {"rows", "best"} (None on a worker),
    or {"more": True} when ``trials_per_process`` trials ran and trials remain."""
    try:
        from melanoma.tuning import hypermodel as tuning
    except ModuleNotFoundError as error:  # keras-tuner, or one of its own imports, is missing
        raise UserError(f"tune needs keras-tuner and what it imports: {error} "
                        f"(pip install {error.name or 'keras-tuner'})") from None

    _check_roles(cfg, role, oracle)
    started = time.perf_counter()
    variant = base_variant(cfg)
    out_dir = Path(out_dir or Path("reports") / f"tune-{cfg.name}")
    project_dir = out_dir / cfg.tune.project
    if role != "chief":
        layout.refuse_inside_data(resolve_data_dir(cfg, data_dir), {"--out": out_dir})
    _prepare_state(tuning, cfg, variant, out_dir, project_dir, restart, role, oracle,
                   connect_timeout)
    hardware = backend.configure()
    splits = prep = None
    if role != "chief":  # the chief only runs the oracle: it never trains
        splits, prep = _data(cfg, variant, data_dir)
    strategy = backend.tuner_strategy(backend.distribution())
    hypermodel = tuning.HeadHyperModel(variant, cfg.tune, splits, prep, cfg.seed)
    tuner = _search(tuning, hypermodel, cfg, variant, out_dir, project_dir, strategy, role,
                    oracle, worker_id, trials_per_process)
    if tuner is None:
        return {"more": True}
    if role == "worker":
        log.info(f"tune: worker done in {time.perf_counter() - started:.0f} s (results are written "
            f"by the chief)")
        return None
    info = provenance.collect(cfg.to_dict(), cfg.tune.seed, hardware, {
        "base_variant": dataclasses.asdict(variant), "project_dir": str(project_dir),
        "overrides": list(cfg.overrides), "wall_seconds": round(time.perf_counter() - started, 1)})
    results = tuning.write_results(out_dir, tuner.oracle, info)
    log.info(f"wrote {out_dir}/ (trials.json, trials.csv, trials.md, best_hyperparameters.json, "
        f"objective_vs_hyperparameters.png) in {time.perf_counter() - started:.0f} s")
    return results


def _open_tuner(tuning, hypermodel, out_dir: Path, project_dir: Path, strategy,
                trials_per_process=None):
    """Create or reload the tuner; a state keras-tuner cannot read is a clear UserError."""
    try:
        return tuning.make_tuner(hypermodel, out_dir, overwrite=False, strategy=strategy,
                                 trials_per_process=trials_per_process)
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        reason = (str(error).splitlines() or [""])[0]
        raise UserError(f"tuner directory {project_dir} cannot be resumed "
                        f"({type(error).__name__}: {reason}). "
                        f"Nothing was deleted: finished trials stay in trial_*/trial.json. Use "
                        f"another --out, or --restart to start over (deletes {project_dir})"
                        ) from None
