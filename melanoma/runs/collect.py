"""Gathering what every job produced for the report: predictions of each row (test and
validation), specs, histories and model keys, in config order; the fold models' part comes
from runs/cv.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from melanoma import config as config_mod
from melanoma.data.splits import Splits
from melanoma.models.backbones import get_backbone
from melanoma.models.epochs import kept_epoch
from melanoma.models.predict import TTA_SUFFIX
from melanoma.runs import cv
from melanoma.util.names import relative_name


def variant_spec(variant: config_mod.VariantConfig, preprocessing) -> dict:
    """The columns that say exactly what a row did (printed in every report row)."""
    return {"backbone": get_backbone(variant.backbone).label,
            "image_size": variant.resolved_image_size(), "weights": variant.weights,
            "preprocessing": variant.preprocessing, "epochs": variant.epochs,
            "learning_rate": variant.learning_rate, "batch_size": variant.batch_size,
            "head_units": variant.head_units, "dropout": variant.dropout,
            "head": variant.head, "augmentation": variant.augmentation.describe(),
            "class_weight": variant.class_weight if isinstance(variant.class_weight, str)
            else ", ".join(f"{k} {w:g}" for k, w in variant.class_weight.items()),
            "balanced_sampling": variant.balanced_sampling,
            "spec": preprocessing.describe(), "note": variant.note,
            **({"published": dict(variant.published)} if variant.published else {})}


def kept_text(variant, kept: dict[int, int]) -> dict:
    """The row's ``keep_epoch`` and ``kept_epoch`` (the epoch whose weights were scored; with
    several seeds "6, 8, 7 (seeds 1, 2, 3)")."""
    epochs = list(kept.values())
    text = epochs[0] if len(epochs) == 1 else (
        f"{', '.join(map(str, epochs))} (seeds {', '.join(map(str, kept))})")
    return {"keep_epoch": variant.keep_epoch, "kept_epoch": text}


@dataclass
class Collected:
    """What the variants produced, gathered for the report."""

    frames: list = field(default_factory=list)
    val_frames: list = field(default_factory=list)
    specs: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    data_key: str = ""
    tracks: list = field(default_factory=list)  # (variant, seed, fold, history): TensorBoard
    fold_frames: list = field(default_factory=list)  # cross-validation: runs/cv.py

    def add_model_file(self, result, variant, seed: int) -> None:
        self.frames.append(result.predictions.assign(seed=seed))
        self.specs[variant.name], self.histories[variant.name] = result.spec, result.history
        self.keys[variant.name] = result.spec["sha256"] or variant.model_file

    def add_trained(self, variant, seed: int, splits: Splits, root: Path, probs: dict,
                    tta: bool) -> None:
        for suffix in ("", TTA_SUFFIX) if tta else ("",):
            name = variant.name + suffix
            if suffix:
                self.specs[name] = {**self.specs[variant.name], "spec": self.specs[variant.name]
                                    ["spec"] + " | TTA: mean over identity, h, v, h+v flips"}
            for split, target in (("test", self.frames), ("val", self.val_frames)):
                images = getattr(splits, split)
                target.append(pd.DataFrame({
                    "variant": name, "seed": seed,
                    "file": [relative_name(f, root) for f in images.files],
                    "label": images.labels, "prob_malignant": probs[split + suffix]}))


def collect(cfg, found, runner) -> Collected:
    """Every row's predictions in config order (variant by variant, seed by seed)."""
    from melanoma.runs.model_files import evaluate_row

    collected = Collected(data_key=runner.data_key)
    seeds = cfg.training_seeds
    by_variant: dict[str, list] = {}
    for job in runner.jobs:
        if not job.fold:  # fold models: runs/cv.py
            by_variant.setdefault(job.variant.name, []).append(job)
    for i, variant in enumerate(cfg.variants, 1):
        if variant.model_file:
            label = f"[{i}/{len(cfg.variants)}] {variant.name}"
            collected.add_model_file(evaluate_row(variant, found, cfg.data.interpolation, label),
                                     variant, seeds[0])
            continue
        keys, kept = {}, {}
        for job in by_variant[variant.name]:
            probs, history, preprocessing = runner.result(job)
            name = variant.name if len(seeds) == 1 else f"{variant.name} seed {job.seed}"
            collected.histories[name], keys[job.seed] = history, job.key
            kept[job.seed] = kept_epoch(history, variant.keep_epoch)
            collected.tracks.append((variant.name, job.seed, 0, history))
            collected.specs[variant.name] = variant_spec(variant, preprocessing)
            collected.add_trained(variant, job.seed, runner.splits_for(variant), found.root,
                                  probs, cfg.evaluation.tta)
        collected.keys[variant.name] = keys[seeds[0]] if len(seeds) == 1 else keys
        collected.specs[variant.name].update(kept_text(variant, kept))
    cv.add_fold_results(collected, cfg, runner, found)
    return collected
