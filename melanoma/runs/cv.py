"""k-fold cross-validation in a run: the fold plan, each fold's train/val rows, and what the
fold models give the report (per-fold validation predictions; the "(k-fold mean)" rows).

    melanoma-bench run --set data.cv_folds=5                         # + per-fold table
    melanoma-bench run --set data.cv_folds=5 --set data.cv_average=true  # + k-fold mean rows

Every (variant, seed, fold) is one job of runs/jobs.py (own lock, own cache key and file
``<variant>-fold<f>of<k>-<key>.keras``); the single-split models and rows stay as they are.
Folds come from data/kfold.py over the files of train/, seeded by the config's ``seed``.
See docs/cross_validation.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data import kfold
from melanoma.data.splits import CachedSplit, Splits
from melanoma.models.predict import TTA_SUFFIX
from melanoma.reporting.folds import FILE as FOLD_FILE
from melanoma.util import atomic
from melanoma.util.errors import UserError
from melanoma.util.names import csv_safe, relative_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldPlan:
    """k and the fold (1..k) of each file of train/ (in layout order), with its hash."""

    k: int
    numbers: np.ndarray
    digest: str
    grouped: bool


def train_group_ids(found) -> np.ndarray:
    """The lesion/patient id of each train/ file from the data folder's manifest.csv (as
    ``melanoma-bench import`` writes it), "" where none is named."""
    from melanoma.evaluation.audit.items import read_groups

    groups = read_groups(found.root)
    if not groups:
        return np.full(len(found.train), "", dtype=object)
    base = Path(found.root).resolve()
    ids = []
    for file in found.train.files:
        try:
            ids.append(groups.get(Path(file).resolve().relative_to(base).as_posix(), ""))
        except ValueError:
            ids.append("")
    return np.asarray(ids, dtype=object)


def fold_plan(cfg, found) -> FoldPlan | None:
    """The run's fold plan (None without ``data.cv_folds``), or a UserError before any work
    when k exceeds the smallest class (or ``cv_average`` is set without folds)."""
    k = cfg.data.cv_folds
    if not kfold.enabled(k):
        if cfg.data.cv_average:
            raise UserError("data: cv_average = true needs data.cv_folds >= 2")
        return None
    ids = train_group_ids(found)
    numbers = kfold.fold_numbers(found.train.labels, ids, k, cfg.seed)
    grouped = bool(np.any(ids != ""))
    log.info("cross-validation: %d folds of %d training images%s, split seed %d", k,
             len(numbers), " grouped by lesion/patient id" if grouped else "", cfg.seed)
    return FoldPlan(k, numbers, kfold.fingerprint(numbers), grouped)


def fold_splits(splits: Splits, plan: FoldPlan, fold: int) -> Splits:
    """``splits`` with train/val replaced by fold ``fold``'s (training folder rows)."""
    cache = splits.train.cache
    train_rows, val_rows = kfold.fold_rows(plan.numbers, cache.kept_index, fold)
    return replace(splits, train=CachedSplit(cache, train_rows), val=CachedSplit(cache, val_rows))


def mean_name(variant: str, k: int) -> str:
    """The report row of the fold models' mean probability."""
    return f"{variant} ({k}-fold mean)"


def _frame(name: str, seed: int, split: CachedSplit, root: Path, probs, **extra) -> pd.DataFrame:
    return pd.DataFrame({"variant": name, "seed": seed, **extra,
                         "file": [relative_name(f, root) for f in split.files],
                         "label": split.labels, "prob_malignant": probs})


def add_fold_results(collected, cfg, runner, found) -> None:
    """Per-fold validation predictions into ``collected.fold_frames``; with ``cv_average``
    a "(k-fold mean)" row per variant and seed: test = the k models' mean probability,
    validation = their out-of-fold predictions (each training image once). With
    ``evaluation.tta`` the same again for the flip-averaged probabilities (``<variant>+tta``),
    as the single-split rows have."""
    plan = runner.folds
    if plan is None:
        return
    suffixes = ("", TTA_SUFFIX) if cfg.evaluation.tta else ("",)
    for variant in cfg.variants:
        for seed in cfg.training_seeds:
            jobs = sorted((j for j in runner.jobs if j.fold and j.parent == variant.name
                           and j.seed == seed), key=lambda j: j.fold)
            if not jobs:
                continue
            results = [runner.result(job) for job in jobs]
            collected.tracks += [(variant.name, seed, job.fold, history)
                                 for job, (_, history, _) in zip(jobs, results)]
            for suffix in suffixes:
                name = variant.name + suffix
                vals = [_frame(name, seed, runner.job_splits(job).val, found.root,
                               probs["val" + suffix], fold=job.fold)
                        for job, (probs, _, _) in zip(jobs, results)]
                collected.fold_frames += vals
                if cfg.data.cv_average:
                    tests = [probs["test" + suffix] for probs, _, _ in results]
                    _add_mean_rows(collected, name, seed, plan.k, runner.splits_for(variant),
                                   tests, vals, found)


def _add_mean_rows(collected, row: str, seed: int, k: int, splits, tests, vals,
                   found) -> None:
    name = mean_name(row, k)
    collected.frames.append(_frame(name, seed, splits.test, found.root, np.mean(tests, axis=0)))
    collected.val_frames.append(pd.concat(vals, ignore_index=True).drop(columns="fold")
                                .assign(variant=name))
    spec = dict(collected.specs.get(row, {}))
    spec["note"] = (f"mean probability of the {k} fold models (each trained on {k - 1}/{k} "
                    f"of train/); threshold chosen on their out-of-fold predictions"
                    + (f"; {spec['note']}" if spec.get("note") else ""))
    collected.specs[name] = spec


def write_fold_predictions(out_dir: Path, collected) -> None:
    """``cv_val_predictions.csv`` (variant, seed, fold, file, label, prob_malignant) for the
    report's cross-validation table; an earlier run's file goes when this run has no folds."""
    path = Path(out_dir) / FOLD_FILE
    if not collected.fold_frames:
        path.unlink(missing_ok=True)
        return
    atomic.make_folder(out_dir)
    frame = pd.concat(collected.fold_frames, ignore_index=True)
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        csv_safe(frame).to_csv(handle, index=False, float_format="%.9g")
