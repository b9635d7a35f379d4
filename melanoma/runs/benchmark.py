"""The benchmark run as steps: check -> lock -> decode -> train or load -> predict -> report.

    melanoma-bench run                                # embedded data, CPU default config
    melanoma-bench run --config paper --data-dir ~/data/melanoma
    melanoma-bench run --config paper --shard 2/4     # one slice of the (variant, seed) jobs

Each (variant, seed) is one job with its own lock (runs/jobs.py): processes started on the
same config and models folder share the jobs, and the one that finds every model saved
writes the report (loading the models the others trained).

From Python: ``melanoma.run_benchmark("default", overrides=["defaults.epochs=1"])``.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from melanoma import config as config_mod
from melanoma.data import layout, preflight
from melanoma.data import splits as data_splits
from melanoma.data.cache import fit_preprocessing
from melanoma.data.preprocessing import get_preprocessing
from melanoma.data.splits import Splits, check_split_sizes, fingerprint, limited, load_splits, resolve_data_dir
from melanoma.models import storage
from melanoma.models.backbones import check_own_code, get_backbone
from melanoma.models.epochs import kept_epoch
from melanoma.models.factory import resolve_weights
from melanoma.models.loading import check_file
from melanoma.models.predict import predict_splits
from melanoma.models.storage import CHECKPOINT_FILE
from melanoma.reporting import ownership
from melanoma.reporting import run_report as report
from melanoma.reporting.compact import degenerate_lines
from melanoma.runs import cv, tracking
from melanoma.runs import jobs as jobs_mod
from melanoma.runs.collect import Collected, collect
from melanoma.util import atomic, backend, locks, provenance
from melanoma.util.names import relative_name

log = logging.getLogger(__name__)


def check_variants(cfg: config_mod.RunConfig) -> None:
    """Fail before any work if a variant's weights or model file are unavailable, or a
    model file holds code (Lambda layers, SavedModel) without trust_model_code."""
    for variant in cfg.variants:
        if variant.model_file:  # evaluated, not trained: the file must be there and safe
            check_file(Path(variant.model_file).expanduser(), variant.trust_model_code)
            continue
        spec = get_backbone(variant.backbone)
        check_own_code(spec, variant.trust_model_code, variant.name)
        resolve_weights(spec, variant.weights)


def train_variant(variant, splits: Splits, preprocessing, seed: int, label: str, pool,
                  checkpoint_dir: Path | None = None):
    """Train one job on a fresh or reset model from ``pool`` (models.training.train_job),
    resuming from ``checkpoint_dir`` when it holds a saved epoch; returns (network, history).
    The model takes uint8 batches and warps and preprocesses them in its input layer; the
    returned network takes preprocessed float32 images, as saved."""
    from melanoma.models import image_input, training

    def build():
        return training.build_model(variant, seed, preprocessing)

    strategy = backend.distribution()  # several GPUs: batch_size is the global batch
    with backend.scope(strategy):
        model = pool.get(training.pool_key(variant), build, variant.learning_rate,
                         variant.jit_compile, seed)
    history = training.train_job(model, variant, splits, preprocessing, seed, label,
                                 checkpoint_dir=checkpoint_dir)
    return image_input.network_of(model), history


def _load_cached(cached, variant, label: str):
    log.info("%s: loading %s (same config; --retrain to train again)", label, cached.model_path)
    model = storage.load(cached)
    preprocessing = get_preprocessing(variant.preprocessing,
                                      cached.sidecar.get("featurewise_mean"))
    return model, preprocessing, cached.sidecar.get("history", {})


def _train_and_save(job, splits: Splits, cfg, models_dir: Path, pool,
                    stale_before: float | None = None):
    """Train (or resume) one job and save it; the final epoch state is first copied to the
    job's ``hand_over`` folders: the checkpoints of longer variants that continue from it
    (replacing a state older than ``stale_before``: --retrain discards earlier runs')."""
    variant, key, label = job.variant, job.key, job.label
    preprocessing = fit_preprocessing(get_preprocessing(variant.preprocessing),
                                      splits.train.cache, splits.train.index)
    log.info("%s: training %d epochs on %d images (%d for validation)", label, variant.epochs,
             len(splits.train.labels), len(splits.val.labels))
    started = time.perf_counter()
    checkpoints = storage.checkpoint_dir(models_dir, variant.name, key)
    model, history = train_variant(variant, splits, preprocessing, job.seed, label, pool,
                                   checkpoints)
    saved = storage.save(model, models_dir, variant.name, key, {
        "recipe": job.recipe, "variant": asdict(variant), "seed": job.seed,
        "split_seed": cfg.seed,
        "image_size": variant.resolved_image_size(),
        "preprocessing": variant.preprocessing, "featurewise_mean": preprocessing.mean,
        "interpolation": cfg.data.interpolation,
        "history": history, "keep_epoch": variant.keep_epoch,
        "kept_epoch": kept_epoch(history, variant.keep_epoch),
        "train_seconds": round(time.perf_counter() - started, 1),
        "versions": provenance.package_versions()})
    for folder, longer_key in zip(job.hand_over, job.hand_over_keys):
        other = jobs_mod.lock_path(models_dir, longer_key)  # never over its further progress
        state = folder / CHECKPOINT_FILE
        stale = stale_before is not None and state.exists() \
            and state.stat().st_mtime < stale_before
        if (stale or not state.exists()) and not locks.held_by_other(other):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoints / CHECKPOINT_FILE, folder / CHECKPOINT_FILE)
            log.info("%s: its %d epochs are handed over to %s (same training, longer)", label,
                     variant.epochs, folder.name.removesuffix(".partial"))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the final model replaces them
    log.info("%s: saved %s", label, saved.model_path)
    return model, preprocessing, history


def continuations(cfg, data_key: str, models_dir: Path, retrain: bool,
                  seed: int | None = None) -> dict[str, tuple]:
    """{donor variant: checkpoint folders of the longer variants that continue from it} for
    one training ``seed`` (default: the first); see ``jobs.continuation_pairs``."""
    seed = cfg.training_seeds[0] if seed is None else seed
    return {job.variant.name: job.hand_over
            for job in jobs_mod.plan_jobs(cfg, data_key, models_dir, retrain)
            if job.seed == seed and job.hand_over}


class JobRunner:
    """Trains jobs (``train``, called under the job's lock) and gives every job's
    predictions for the report (``result``: from memory, else the saved model is loaded)."""

    def __init__(self, cfg, found: layout.DataLayout, state: jobs_mod.JobState):
        self.cfg, self.found, self.state = cfg, found, state
        self.splits: dict[int, Splits] = {}
        self.results: dict[str, tuple] = {}  # model key -> (probs, history, preprocessing)
        self.pool, self.mlflow_on = None, cfg.mlflow
        self.data_key, self.jobs, self.folds = "", [], None  # folds: a cv.FoldPlan

    def splits_for(self, variant) -> Splits:
        size = variant.resolved_image_size()
        if size not in self.splits:
            self.splits[size] = load_splits(self.found, size, self.cfg)
        return self.splits[size]

    def job_splits(self, job) -> Splits:
        """The job's splits: train/val of its fold with cross-validation (runs/cv.py)."""
        splits = self.splits_for(job.variant)
        return cv.fold_splits(splits, self.folds, job.fold) if job.fold else splits

    def _predict(self, job, model, preprocessing) -> dict:
        return predict_splits(model, self.job_splits(job), preprocessing,
                              job.variant.val_batch_size, self.cfg.evaluation.tta)

    def train(self, job) -> None:
        from melanoma.models.training import ModelPool

        if self.pool is None:  # one traced model per architecture, for every seed
            self.pool = ModelPool()
        models_dir = self.state.models_dir
        folder = storage.checkpoint_dir(models_dir, job.variant.name, job.key)
        state_file = folder / CHECKPOINT_FILE
        if self.state.retrain and state_file.exists() \
                and state_file.stat().st_mtime < self.state.since:
            shutil.rmtree(folder, ignore_errors=True)  # --retrain: not an earlier run's epochs
        model, preprocessing, history = _train_and_save(
            job, self.job_splits(job), self.cfg, models_dir, self.pool,
            self.state.since if self.state.retrain else None)
        if self.mlflow_on:  # after one failure (warned) no further tries in this run
            self.mlflow_on = tracking.log_mlflow(self.cfg, job, history)
        self.results[job.key] = (self._predict(job, model, preprocessing), history,
                                 preprocessing)

    def result(self, job) -> tuple[dict, dict, object]:
        if job.key not in self.results:
            cached = storage.find(self.state.models_dir, job.key, {"recipe": job.recipe})
            model, preprocessing, history = _load_cached(cached, job.variant, job.label)
            self.results[job.key] = (self._predict(job, model, preprocessing), history,
                                     preprocessing)
        return self.results[job.key]


def run_benchmark(cfg: config_mod.RunConfig, data_dir: Path | None = None,
                  out_dir: Path | None = None, models_dir: Path = Path("models"),
                  retrain: bool = False, strict: bool = False,
                  shard: tuple[int, int] | None = None, overwrite: bool = False) -> list[dict]:
    """Train or load every (variant, seed) job of ``cfg`` and write the report; returns the
    rows, or [] when other processes still train some jobs (the last one writes the report).
    ``strict``: any pre-flight warning about the data is an error, before any training.
    ``shard`` (I, N): train only the jobs with index % N == I - 1. An ``out_dir`` holding
    the report of another config, data set or limit is refused before any work, unless
    ``overwrite`` (reporting/ownership.py)."""
    started, since = time.perf_counter(), time.time()
    check_variants(cfg)
    # a wrong data folder fails before TensorFlow loads (seconds, not ten)
    found = limited(layout.discover(resolve_data_dir(cfg, data_dir)), cfg.data.limit)
    hardware = backend.configure()  # the device line comes first
    checked = preflight.check(found, strict)
    log.info(checked.summary())
    if any(not v.model_file for v in cfg.variants):  # model-file rows need no models/
        check_split_sizes(found, cfg.data.val_fraction)
    folds = cv.fold_plan(cfg, found)  # a bad data.cv_folds fails here, before any folder
    out_dir, models_dir = Path(out_dir or Path("reports") / cfg.name), Path(models_dir)
    layout.refuse_inside_data(found.root, {"--out": out_dir, "--models-dir": models_dir})
    atomic.check_room(out_dir, "--out folder")
    atomic.check_room(models_dir, "--models-dir")
    data_key = data_fingerprint(found)
    ownership.check_owner(out_dir, ownership.run_identity(cfg.to_dict(), data_key), overwrite)
    plan = jobs_mod.plan_id(cfg, models_dir)
    created, out_created = not models_dir.exists(), not out_dir.exists()
    if any(not v.model_file for v in cfg.variants):
        atomic.make_folder(models_dir)  # a file or an unwritable place: one line, now
    # another run on the same output folder fails fast; a process of the same plan joins
    try:
        held = locks.acquire_or_join(out_dir, plan)
    except BaseException:
        jobs_mod.remove_if_empty(models_dir, created)
        raise
    try:
        atomic.sweep_stale(out_dir)
        state = jobs_mod.JobState(models_dir, retrain, since)
        runner = _work(cfg, found, state, shard, folds, data_key)
        if runner is None:
            return []
        if held is None:  # joined: the report is written under the folder's lock
            held = locks.wait_acquire(out_dir, plan)
        return _report(cfg, found, checked, out_dir, runner, hardware, started)
    finally:
        if held is not None:
            locks.release(held)
        jobs_mod.remove_if_empty(models_dir, created)
        jobs_mod.remove_if_empty(out_dir, out_created)  # failed before writing anything


def data_fingerprint(found: layout.DataLayout) -> str:
    """The data set's key: train and test files, bytes and labels (a relabelled copy is
    other data)."""
    return fingerprint(found.train.files + found.test.files,
                       [*found.train.labels, *found.test.labels])


def _work(cfg, found: layout.DataLayout, state, shard, folds=None,
          data_key: str | None = None) -> JobRunner | None:
    """Train this process's share of the jobs; the runner when every model is saved (the
    report can be written), else None."""
    log.info("data: %s (train %d, test %d files)", found.root, len(found.train), len(found.test))
    data_key = data_key or data_fingerprint(found)
    runner = JobRunner(cfg, found, state)
    runner.data_key, runner.folds = data_key, folds
    runner.jobs = jobs_mod.plan_jobs(cfg, data_key, state.models_dir, state.retrain,
                                     runner.folds)
    mine = jobs_mod.shard_of(runner.jobs, shard)
    if shard is not None:
        log.info("shard %d/%d: %d of %d jobs", *shard, len(mine), len(runner.jobs))
    jobs_mod.work_through(mine, state, runner.train)
    missing = jobs_mod.unsaved(runner.jobs, state)
    if missing:
        log.info("report: %d of %d models are not saved yet (%s); the process that saves the "
                 "last one writes the report, or run `melanoma-bench run` again to load them "
                 "all and report", len(missing), len({j.key for j in runner.jobs}),
                 ", ".join(j.label.split("] ", 1)[-1] for j in missing[:5]))
        return None
    return runner


def _provenance(cfg, found, checked, first: Splits | None, collected: Collected, hardware: dict,
                started: float) -> dict:
    skipped = first.skipped if first else ()
    extra = {"data": {"root": str(found.root), "fingerprint": collected.data_key,
                      "train_fingerprint": (data_splits.labelled_fingerprint(
                          found.train.files, found.train.labels) if first else None),
                      "limit": cfg.data.limit,
                      "n_train": len(first.train.labels) if first else None,
                      "n_train_by_class": ({"benign": int((first.train.labels == 0).sum()),
                                            "malignant": int((first.train.labels == 1).sum())}
                                           if first else None),
                      "n_val": len(first.val.labels) if first else None,
                      "skipped_images": len(skipped), "skipped": [list(s) for s in skipped],
                      "preflight": checked.to_dict()},
             ownership.FIELD: ownership.run_identity(cfg.to_dict(), collected.data_key),
             "seeds": list(cfg.training_seeds), "overrides": list(cfg.overrides),
             "model_keys": collected.keys, "wall_seconds": round(time.perf_counter() - started, 1)}
    return provenance.collect(cfg.to_dict(), cfg.seed, hardware, extra)


def _report(cfg, found: layout.DataLayout, checked: preflight.PreflightReport, out_dir: Path,
            runner: JobRunner, hardware: dict, started: float) -> list[dict]:
    """Predictions of every job (loading the models other processes trained), the audit and
    every table, figure and page."""
    collected = collect(cfg, found, runner)
    trained = [v for v in cfg.variants if not v.model_file]  # the first trained size's splits
    first = runner.splits_for(trained[0]) if trained else None
    info = _provenance(cfg, found, checked, first, collected, hardware, started)
    info["models_dir"] = str(runner.state.models_dir)  # the report's Grad-CAM reloads them
    clean, audit_summary = (leakage_audit(first, found.root, out_dir, cfg)
                            if cfg.evaluation.audit and first else (None, None))
    settings = cfg.evaluation.settings(cfg.seed)
    cv.write_fold_predictions(out_dir, collected)  # read by the report's CV table
    tracking.write_tensorboard(out_dir, cfg, collected.tracks)
    rows = report.write_run(out_dir, pd.concat(collected.frames, ignore_index=True),
                            collected.specs, collected.histories, info,
                            pd.concat(collected.val_frames, ignore_index=True)
                            if collected.val_frames else None, settings, clean, audit_summary)
    log.info("wrote %s/ (index.html, results.json/csv/md, predictions.csv, plots) in %.0f s",
             out_dir, time.perf_counter() - started)
    for line in degenerate_lines(rows):
        log.warning(line)
    return rows


def leakage_audit(splits: Splits, root: Path, out_dir: Path, cfg) -> tuple[set[str], dict]:
    """Near-duplicate audit over the run's own train/val/test images (audit_* files in
    ``out_dir``); returns the clean test files (relative names) and the summary."""
    from melanoma.evaluation import audit
    from melanoma.reporting.audit_figures import run_audit

    started = time.perf_counter()
    items = audit.items_from_splits(*((s.files, s.labels) for s in
                                      (splits.train, splits.val, splits.test)))
    pairs, summary = run_audit(items, out_dir, cfg.evaluation.audit_min_corr,
                               include_flips=cfg.evaluation.audit_include_flips,
                               groups=audit.groups_for(items, root))
    clean = {relative_name(Path(f), root) for f in audit.clean_test_files(pairs, items)}
    log.info("audit: %d of %d test images have a duplicate (%d) or the same lesion in "
             "train/val; %d clean (%.1f s)", summary["n_test"] - len(clean), summary["n_test"],
             summary["test_with_duplicate_in_train_or_val"], len(clean),
             time.perf_counter() - started)
    return clean, summary
