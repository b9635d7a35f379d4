"""Training jobs: one per (variant, seed), each under its own lock file in the models folder,
so several processes on one config and models folder share the work.

    jobs = plan_jobs(cfg, data_key, models_dir, retrain=False)
    mine = shard_of(jobs, (1, 2))                      # --shard 1/2: jobs 0, 2, 4, ...
    work_through(jobs, mine, JobState(models_dir), train_one)

A job is trained by whichever process first takes ``models/.job-<key>.lock``; a job whose
lock a live process holds is skipped and tried again after the others (and one that
continues a shorter variant's training waits while that shorter job is being trained: the
hand-over saves its epochs). Jobs are ordered seed by seed, variants in config order, so
the shorter variant of a continuation always comes first. Two variants with the same model
key are one model: trained once, loaded for the other row.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from melanoma.config import recipe_key, training_recipe
from melanoma.models import storage
from melanoma.util import locks
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One (variant, seed) training, or (variant, seed, fold) with k-fold cross-validation:
    its model key, its place in the job list and the continuation links (``donor_key``: the
    shorter job it continues from; ``hand_over``: checkpoint folders of longer jobs that
    continue from this one). A fold job's variant is renamed ``<variant>-fold<f>of<k>`` (the
    model's file name); ``parent`` is the config's variant name, ``fold`` 0 for the split."""

    index: int
    variant: object  # config.VariantConfig
    seed: int
    key: str
    label: str
    donor_key: str | None = None
    hand_over: tuple[Path, ...] = ()
    fold: int = 0
    parent: str = ""
    hand_over_keys: tuple[str, ...] = ()  # the model keys of the ``hand_over`` folders
    recipe: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)


def run_context(variant, folds=None, fold: int = 0) -> dict:
    """The part of a job's recipe resolved on this machine and run: the Keras backend (each
    draws other random numbers) and the cross-validation fold."""
    from melanoma.util import backend

    context = {"backend": backend.name()}
    if fold:
        context["cv"] = {"k": folds.k, "fold": fold, "folds": folds.digest}
    return context


def job_recipe(variant, data_key: str, cfg, seed: int, folds=None, fold: int = 0) -> dict:
    """Everything that changes the weights of ``variant`` trained with ``seed`` on the
    config's split, or on fold ``fold`` of ``folds`` (a runs.cv.FoldPlan)."""
    recipe = training_recipe(variant, data_key, seed, cfg.data.val_fraction,
                             cfg.data.interpolation, cfg.seed, run_context(variant, folds, fold))
    return json.loads(json.dumps(recipe))  # as a sidecar reads it back (tuples -> lists)


def job_key(variant, data_key: str, cfg, seed: int, folds=None, fold: int = 0) -> str:
    """The model key: a hash of :func:`job_recipe`."""
    return recipe_key(job_recipe(variant, data_key, cfg, seed, folds, fold))


def fold_name(name: str, fold: int, k: int) -> str:
    """``<variant>-fold<f>of<k>``: a fold model's name (its files never meet the split's)."""
    return f"{name}-fold{fold}of{k}"


def continuation_pairs(cfg, data_key: str, seed: int) -> list[tuple]:
    """(donor, longer) variant pairs: a variant that differs from an EARLIER one only by more
    epochs continues from the longest such earlier one (same seed, data order and
    augmentation, so its first epochs are bit for bit the shorter training)."""
    def ckey(v):
        return v.continuation_key(data_key, seed, cfg.data.val_fraction,
                                  cfg.data.interpolation, cfg.seed, run_context(v))

    trained = [v for v in cfg.variants if not v.model_file]
    pairs = []
    for i, longer in enumerate(trained):
        donors = [d for d in trained[:i] if d.epochs < longer.epochs and ckey(d) == ckey(longer)]
        if donors:
            pairs.append((max(donors, key=lambda d: d.epochs), longer))
    return pairs


def _seed_jobs(cfg, data_key: str, models_dir: Path, retrain: bool, seed: int, first: int,
               n: int, folds=None, fold: int = 0) -> list[Job]:
    """The jobs of one seed on the split (``fold`` 0) or on one fold, numbered from ``first``."""
    recipes = {v.name: job_recipe(v, data_key, cfg, seed, folds, fold) for v in cfg.variants
               if not v.model_file}

    def key(v):
        return recipe_key(recipes[v.name])

    def name(v):
        return fold_name(v.name, fold, folds.k) if fold else v.name

    trained = [v for v in cfg.variants if not v.model_file]
    donor_of, hand_over = {}, {}
    for donor, longer in continuation_pairs(cfg, data_key, seed):
        donor_of[longer.name] = key(donor)
        if retrain or storage.find(models_dir, key(longer)) is None:
            hand_over.setdefault(donor.name, []).append(
                (storage.checkpoint_dir(models_dir, name(longer), key(longer)), key(longer)))
    jobs = []
    for variant in trained:
        index = first + len(jobs)
        label = f"[{index + 1}/{n}] {variant.name}" + (
            f" seed {seed}" if len(cfg.training_seeds) > 1 else "") + (
            f" fold {fold}/{folds.k}" if fold else "")
        job_variant = dataclasses.replace(variant, name=name(variant)) if fold else variant
        handed = hand_over.get(variant.name, ())
        jobs.append(Job(index, job_variant, seed, key(variant), label, donor_of.get(variant.name),
                        tuple(f for f, _ in handed), fold, variant.name,
                        tuple(k for _, k in handed), recipes[variant.name]))
    return jobs


def plan_jobs(cfg, data_key: str, models_dir: Path, retrain: bool, folds=None) -> list[Job]:
    """Every (variant, seed) job of ``cfg``, seed by seed, each seed's fold jobs (with a
    runs.cv.FoldPlan ``folds``) after its split jobs. Hand-over folders are planned only for
    longer jobs that are not saved yet (or all, with ``retrain``)."""
    trained = [v for v in cfg.variants if not v.model_file]
    seeds = cfg.training_seeds
    n = len(trained) * len(seeds) * (1 + (folds.k if folds else 0))
    jobs = []
    for seed in seeds:
        for fold in range(folds.k + 1 if folds else 1):
            jobs += _seed_jobs(cfg, data_key, models_dir, retrain, seed, len(jobs), n, folds,
                               fold)
    return jobs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> (I, N) with 1 <= I <= N, else a UserError; None stays None."""
    if text is None:
        return None
    head, sep, tail = str(text).partition("/")
    if sep and head.strip().isdigit() and tail.strip().isdigit():
        i, n = int(head), int(tail)
        if 1 <= i <= n:
            return i, n
    raise UserError(f"--shard expects I/N with 1 <= I <= N (e.g. 1/4), got {text!r}")


def shard_of(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    """The jobs of shard I of N: those with index % N == I - 1 (all without a shard)."""
    if shard is None:
        return list(jobs)
    i, n = shard
    return [job for job in jobs if job.index % n == i - 1]


def lock_path(models_dir: Path, key: str) -> Path:
    return Path(models_dir) / f".job-{key}.lock"


@dataclass
class JobState:
    """What this process knows of the models folder. With ``retrain``, a model counts as
    saved only when it was written after ``since`` (by this run or a process sharing it)."""

    models_dir: Path
    retrain: bool = False
    since: float = 0.0

    def saved(self, key: str) -> bool:
        if self.retrain:  # a damaged earlier model is retrained, not an error
            try:
                found = storage.find(self.models_dir, key)
            except UserError:
                return False
        else:
            found = storage.find(self.models_dir, key)
        if found is None:
            return False
        if not self.retrain:
            return True
        return found.model_path.with_suffix(".json").stat().st_mtime >= self.since

    def locked_by_other(self, key: str) -> dict | None:
        return locks.held_by_other(lock_path(self.models_dir, key))


def clear_leftovers(state: JobState, job: Job) -> None:
    """For a saved job: remove what a process killed between saving the model and cleaning
    up left behind, its lock and its per-epoch checkpoint folder (only when no live process
    on this host holds the lock; another host's lock is left alone)."""
    path = lock_path(state.models_dir, job.key)
    partial = storage.checkpoint_dir(state.models_dir, job.variant.name, job.key)
    if (path.exists() or partial.exists()) and locks.try_lock(path):
        try:
            shutil.rmtree(partial, ignore_errors=True)
        finally:
            locks.release(path)


def _attempt(job: Job, state: JobState, train, done: set[str], defer_on_donor: bool) -> bool:
    """Train ``job`` under its lock unless it is saved; False when it must wait (its lock,
    or its donor's, is held by another live process)."""
    if job.key in done or state.saved(job.key):
        done.add(job.key)
        clear_leftovers(state, job)
        return True
    if defer_on_donor and job.donor_key and not state.saved(job.donor_key) \
            and state.locked_by_other(job.donor_key):
        return False
    path = lock_path(state.models_dir, job.key)
    if not locks.try_lock(path):
        return False
    try:
        if not state.saved(job.key):  # another process may have finished it meanwhile
            train(job)
        done.add(job.key)
    finally:
        locks.release(path)
    return True


def wait_for_donor(job: Job, state: JobState, poll: float = 2.0) -> None:
    """Block while the job this one continues from is being trained by a live process."""
    announced = False
    while job.donor_key and not state.saved(job.donor_key) \
            and (holder := state.locked_by_other(job.donor_key)):
        if not announced:
            log.info("%s: waiting for its shorter twin (pid %s on %s) to hand over its epochs",
                     job.label, holder.get("pid"), holder.get("host"))
            announced = True
        time.sleep(poll)


def work_through(mine: list[Job], state: JobState, train) -> list[Job]:
    """Train every job of ``mine`` that no process has saved, via ``train(job)``; returns the
    jobs left to other live processes (their lock was held to the end)."""
    done: set[str] = set()
    deferred = [job for job in mine if not _attempt(job, state, train, done, True)]
    left = []
    for job in deferred:  # a second chance once the others are done
        wait_for_donor(job, state)
        if not _attempt(job, state, train, done, False):
            holder = state.locked_by_other(job.key) or {}
            log.info("%s: being trained by pid %s on %s; that process saves it", job.label,
                     holder.get("pid"), holder.get("host"))
            left.append(job)
    return left


def unsaved(jobs: list[Job], state: JobState) -> list[Job]:
    """The jobs whose model is not saved yet (empty: the report can be written)."""
    missing, seen = [], set()
    for job in jobs:
        if job.key not in seen:
            seen.add(job.key)
            if not state.saved(job.key):
                missing.append(job)
    return missing


def plan_id(cfg, models_dir: Path) -> str:
    """Processes with the same config and models folder share the jobs and the output folder."""
    text = json.dumps([cfg.to_dict(), str(Path(models_dir).resolve())], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def remove_if_empty(folder: Path, created: bool) -> None:
    """A models folder this run created and left empty (it failed before saving) goes."""
    if created:
        try:
            folder.rmdir()
        except OSError:
            pass
