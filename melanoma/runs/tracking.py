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
    params = {k: v for k, v in dataclasses.asdict(job.variant).items()
              if isinstance(v, (str, int, float, bool)) and k != "name"}
    params.update(fold=job.fold, config=cfg.name)
    name = job.variant.name if not job.fold else job.parent + f" fold {job.fold}"
    return MlflowLogger(enabled=True, experiment=cfg.name).log_history(name, job.seed, history,
                                                                       params=params)


class MlflowLogger:
    """The same per-epoch scalars (and the variant's spec as params) to MLflow: off unless
    ``enabled``, and a warning, not an error, when ``mlflow`` is not installed."""

    def __init__(self, enabled: bool = False, experiment: str | None = None,
                 tracking_uri: str | None = None):
        self.enabled, self.experiment, self.tracking_uri = enabled, experiment, tracking_uri

    def _mlflow(self):
        try:
            import mlflow
        except ImportError:
            log.warning("MLflow logging is on but mlflow is not installed: nothing logged")
            return None
        return mlflow

    def log_history(self, variant: str, seed: int, history: dict[str, list[float]],
                    params: dict | None = None) -> bool:
        """One MLflow run ``<variant>-seed<seed>``; True if something was logged."""
        mlflow = self._mlflow() if self.enabled else None
        if mlflow is None:
            return False
        try:
            if self.tracking_uri:
                mlflow.set_tracking_uri(self.tracking_uri)
            if self.experiment:
                mlflow.set_experiment(self.experiment)
            with mlflow.start_run(run_name=f"{variant}-seed{seed}"):
                mlflow.log_params({"variant": variant, "seed": seed, **(params or {})})
                for key, values in history.items():
                    for epoch, value in enumerate(values):
                        mlflow.log_metric(key, float(value), step=epoch + 1)
        except Exception as error:  # the tracking server's problem must not lose the run
            first = (str(error).strip().splitlines() or [""])[0][:300]
            log.warning("MLflow logging failed (%s: %s); the run goes on without it",
                        type(error).__name__, first)
            return False
        return True
