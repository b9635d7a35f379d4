"""Experiment logs of a run: TensorBoard scalars of every epoch per (variant, seed[, fold])
from the saved histories, and, when ``mlflow = true``, each newly trained job in MLflow.

    melanoma-bench run
    tensorboard --logdir reports/default/tensorboard

The event files are written from the histories saved with the models, after training, so a
run that loads cached models (or models another process trained) still gets every log.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER = "tensorboard"


def write_tensorboard(out_dir: Path, cfg, tracks) -> Path | None:
    """``<out_dir>/tensorboard/<variant>/seed-<n>[/fold-<f>]/{train,validation}`` for every
    (variant, seed, fold, history) of ``tracks`` that has epochs; an earlier run's logs in
    that folder are replaced. None when ``cfg.tensorboard`` is off or nothing was trained."""
    from melanoma.models import tensorboard

    folder = Path(out_dir) / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    if not cfg.tensorboard or not any(history for *_, history in tracks):
        return None
    for variant, seed, fold, history in tracks:
        if history:
            tensorboard.write_history(folder, variant, seed, history, fold=fold)
    log.info("TensorBoard logs: tensorboard --logdir %s", folder)
    return folder


def log_mlflow(cfg, job, history: dict) -> bool:
    """One MLflow run for a job just trained (``mlflow = true``; experiment = the config's
    name; tracking URI from ``$MLFLOW_TRACKING_URI``); True if it was logged."""
    if not cfg.mlflow:
        return False
    from melanoma.models.tensorboard import MlflowLogger

    params = {k: v for k, v in dataclasses.asdict(job.variant).items()
              if isinstance(v, (str, int, float, bool)) and k != "name"}
    params.update(fold=job.fold, config=cfg.name)
    name = job.variant.name if not job.fold else job.parent + f" fold {job.fold}"
    return MlflowLogger(enabled=True, experiment=cfg.name).log_history(name, job.seed, history,
                                                                       params=params)
