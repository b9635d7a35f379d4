"""The benchmark run as steps: check -> lock -> decode -> train or load -> predict -> report.

    melanoma-bench run                                # embedded data, CPU default config
    melanoma-bench run --config paper --data-dir ~/data/melanoma

From Python: ``melanoma.run_benchmark("default", overrides=["defaults.epochs=1"])``.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from melanoma import config as config_mod
from melanoma.data import layout, preflight
from melanoma.data.cache import fit_preprocessing
from melanoma.data.preprocessing import get_preprocessing
from melanoma.data.splits import Splits, check_split_sizes, fingerprint, limited, load_splits, resolve_data_dir
from melanoma.evaluation.rows import EvalSettings
from melanoma.models import storage
from melanoma.models.backbones import get_backbone
from melanoma.models.factory import resolve_weights
from melanoma.models.loading import check_file
from melanoma.models.predict import TTA_SUFFIX, predict_splits
from melanoma.models.storage import CHECKPOINT_FILE
from melanoma.reporting import tables as report
from melanoma.util import atomic, locks, provenance, tfsetup
from melanoma.util.names import relative_name
from melanoma.util.tfsetup import distribution_strategy

log = logging.getLogger(__name__)


def check_variants(cfg: config_mod.RunConfig) -> None:
    """Fail before any work if a variant's weights or model file are unavailable, or a
    model file holds code (Lambda layers, SavedModel) without trust_model_code."""
    for variant in cfg.variants:
        if variant.model_file:  # evaluated, not trained: the file must be there and safe
            check_file(Path(variant.model_file).expanduser(), variant.trust_model_code)
            continue
        resolve_weights(get_backbone(variant.backbone), variant.weights)


def variant_spec(variant: config_mod.VariantConfig, preprocessing) -> dict:
    """The columns that say exactly what a row did (printed in every report row)."""
    return {"backbone": f"EfficientNet{get_backbone(variant.backbone).name}",
            "image_size": variant.resolved_image_size(), "weights": variant.weights,
            "preprocessing": variant.preprocessing, "epochs": variant.epochs,
            "learning_rate": variant.learning_rate, "batch_size": variant.batch_size,
            "head_units": variant.head_units, "dropout": variant.dropout,
            "head": variant.head, "augmentation": variant.augmentation.describe(),
            "class_weight": variant.class_weight if isinstance(variant.class_weight, str)
            else ", ".join(f"{k} {w:g}" for k, w in variant.class_weight.items()),
            "balanced_sampling": variant.balanced_sampling,
            "spec": preprocessing.describe(), "note": variant.note}


def train_variant(variant, splits: Splits, preprocessing, seed: int, label: str, pool,
                  checkpoint_dir: Path | None = None):
    """Train one variant (on a fresh or reset model from ``pool``), resuming from
    ``checkpoint_dir`` when it holds a saved epoch; returns (model, history)."""
    import keras

    from melanoma.data.stream import make_stream_dataset
    from melanoma.models import training
    from melanoma.models.factory import build_classifier

    def build():
        # Seeding here, not per variant: a new global seed makes TF retrace the pooled
        # model's step (~7 s for B0); data order and augmentation have explicit seeds.
        keras.utils.set_random_seed(seed)
        keras.config.set_dtype_policy("mixed_float16" if variant.mixed_precision else "float32")
        try:
            return build_classifier(variant.backbone, variant.resolved_image_size(),
                                    variant.weights, variant.head_units, variant.dropout,
                                    variant.freeze_backbone, variant.bn_momentum)
        finally:
            keras.config.set_dtype_policy("float32")

    strategy = distribution_strategy()  # several GPUs: batch_size is the global batch
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = pool.get(variant.architecture_key(seed), build, variant.learning_rate,
                         variant.jit_compile)
    train, val = splits.train, splits.val
    train_data = make_stream_dataset(train.cache, train.index, train.labels, variant.batch_size,
                                     preprocessing, variant.augmentation, shuffle=True, seed=seed,
                                     balanced=variant.balanced_sampling)
    val_data = make_stream_dataset(val.cache, val.index, None, variant.val_batch_size,
                                   preprocessing)
    weights = training.class_weights(variant.class_weight, train.labels)
    if weights or variant.balanced_sampling:
        log.info("%s: class weights %s; balanced sampling %s", label,
                 weights or "none", "on" if variant.balanced_sampling else "off")
    history = training.fit(model, train_data, val_data, splits.val.labels, variant.epochs, label,
                           checkpoint_dir=checkpoint_dir, class_weight=weights)
    return model, history


def _load_cached(cached, variant, label: str):
    log.info("%s: loading %s (same config; --retrain to train again)", label, cached.model_path)
    model = storage.load(cached)
    preprocessing = get_preprocessing(variant.preprocessing,
                                      cached.sidecar.get("featurewise_mean"))
    return model, preprocessing, cached.sidecar.get("history", {})


def _train_and_save(variant, splits: Splits, cfg, models_dir: Path, key: str, label: str,
                    pool, hand_over: tuple[Path, ...] = ()):
    """Train (or resume), save; the final epoch state is copied to ``hand_over`` folders
    first: the checkpoints of longer variants that continue from this one."""
    preprocessing = fit_preprocessing(get_preprocessing(variant.preprocessing),
                                      splits.train.cache, splits.train.index)
    log.info("%s: training %d epochs on %d images (%d for validation)", label, variant.epochs,
             len(splits.train.labels), len(splits.val.labels))
    started = time.perf_counter()
    checkpoints = storage.checkpoint_dir(models_dir, variant.name, key)
    model, history = train_variant(variant, splits, preprocessing, cfg.seed, label, pool,
                                   checkpoints)
    saved = storage.save(model, models_dir, variant.name, key, {
        "variant": asdict(variant), "image_size": variant.resolved_image_size(),
        "preprocessing": variant.preprocessing, "featurewise_mean": preprocessing.mean,
        "interpolation": cfg.data.interpolation,
        "history": history, "train_seconds": round(time.perf_counter() - started, 1),
        "versions": provenance.package_versions()})
    for folder in hand_over:  # never over a longer training's own (further) progress
        if not (folder / CHECKPOINT_FILE).exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoints / CHECKPOINT_FILE, folder / CHECKPOINT_FILE)
            log.info("%s: its %d epochs are handed over to %s (same training, longer)", label,
                     variant.epochs, folder.name.removesuffix(".partial"))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the final model replaces them
    log.info("%s: saved %s", label, saved.model_path)
    return model, preprocessing, history


def _key(variant, data_key: str, cfg) -> str:
    return variant.model_key(data_key, cfg.seed, cfg.data.val_fraction, cfg.data.interpolation)


def continuations(cfg, data_key: str, models_dir: Path, retrain: bool) -> dict[str, tuple]:
    """{donor variant: checkpoint folders of the longer variants that continue from it}.

    A variant that differs from an EARLIER one only by more epochs starts from that one's
    final epoch instead of from scratch: same seed, data order and augmentation, so its first
    epochs are bit for bit the shorter training (the per-epoch resume guarantees it); this
    saves those epochs' compute. Only variants not already saved take part."""
    plan: dict[str, list[Path]] = {}
    trained = [v for v in cfg.variants if not v.model_file]
    for i, longer in enumerate(trained):
        key = longer.continuation_key(data_key, cfg.seed, cfg.data.val_fraction,
                                      cfg.data.interpolation)
        donors = [d for d in trained[:i] if d.epochs < longer.epochs and d.continuation_key(
            data_key, cfg.seed, cfg.data.val_fraction, cfg.data.interpolation) == key]
        longer_key = _key(longer, data_key, cfg)
        if donors and (retrain or storage.find(models_dir, longer_key) is None):
            donor = max(donors, key=lambda d: d.epochs)
            plan.setdefault(donor.name, []).append(
                storage.checkpoint_dir(models_dir, longer.name, longer_key))
    return {name: tuple(folders) for name, folders in plan.items()}


def run_variant(variant, splits: Splits, data_key: str, cfg, models_dir: Path, retrain: bool,
                label: str, pool, tta: bool = False, hand_over: tuple[Path, ...] = ()):
    """Train or load one variant; returns ({split: probabilities}, history, spec, model key)."""
    key = _key(variant, data_key, cfg)
    expect = {"preprocessing": variant.preprocessing, "image_size": variant.resolved_image_size()}
    cached = None if retrain else storage.find(models_dir, key, expect)
    if cached is not None:
        model, preprocessing, history = _load_cached(cached, variant, label)
    else:
        model, preprocessing, history = _train_and_save(variant, splits, cfg, models_dir, key,
                                                        label, pool, hand_over)
    probs = predict_splits(model, splits, preprocessing, variant.val_batch_size, tta)
    return probs, history, variant_spec(variant, preprocessing), key


@dataclass
class Collected:
    """What the variants produced, gathered for the report."""

    frames: list = field(default_factory=list)
    val_frames: list = field(default_factory=list)
    specs: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    data_key: str = ""

    def add_model_file(self, result, variant) -> None:
        self.frames.append(result.predictions)
        self.specs[variant.name], self.histories[variant.name] = result.spec, result.history
        self.keys[variant.name] = result.spec["sha256"] or variant.model_file

    def add_trained(self, variant, splits: Splits, root: Path, probs: dict, tta: bool) -> None:
        for suffix in ("", TTA_SUFFIX) if tta else ("",):
            name = variant.name + suffix
            if suffix:
                self.specs[name] = {**self.specs[variant.name], "spec": self.specs[variant.name]
                                    ["spec"] + " | TTA: mean over identity, h, v, h+v flips"}
            for split, target in (("test", self.frames), ("val", self.val_frames)):
                images = getattr(splits, split)
                target.append(pd.DataFrame({
                    "variant": name, "file": [relative_name(f, root) for f in images.files],
                    "label": images.labels, "prob_malignant": probs[split + suffix]}))


def run_benchmark(cfg: config_mod.RunConfig, data_dir: Path | None = None,
                  out_dir: Path | None = None, models_dir: Path = Path("models"),
                  retrain: bool = False, strict: bool = False) -> list[dict]:
    """Train or load every variant of ``cfg`` and write the report; returns the rows.
    ``strict``: any pre-flight warning about the data is an error, before any training."""
    started = time.perf_counter()
    check_variants(cfg)
    hardware = tfsetup.configure()  # the device line comes first
    found = limited(layout.discover(resolve_data_dir(cfg, data_dir)), cfg.data.limit)
    checked = preflight.check(found, strict)
    log.info(checked.summary())
    trains = any(not v.model_file for v in cfg.variants)  # model-file rows need no models/
    if trains:
        check_split_sizes(found, cfg.data.val_fraction)
    out_dir = Path(out_dir or Path("reports") / cfg.name)
    # a second run on the same folders fails fast instead of writing beside this one
    with locks.hold(out_dir, *([models_dir] if trains else [])):
        atomic.sweep_stale(out_dir)
        return _run_locked(cfg, found, checked, out_dir, Path(models_dir), retrain, started,
                           hardware)


def _run_variants(cfg, found: layout.DataLayout, models_dir: Path, retrain: bool,
                  collected: Collected) -> Splits | None:
    """Every variant in turn; returns the splits of the first trained size (None when every
    row is a model file)."""
    from melanoma.evaluation.model_files import evaluate_row
    from melanoma.models.training import ModelPool

    data_key = fingerprint(found.train.files + found.test.files)
    collected.data_key = data_key
    if retrain:  # discard unfinished trainings first: a shorter variant may hand over below
        for variant in cfg.variants:
            shutil.rmtree(storage.checkpoint_dir(models_dir, variant.name,
                                                 _key(variant, data_key, cfg)), ignore_errors=True)
    hand_over = continuations(cfg, data_key, models_dir, retrain)
    cache: dict[int, Splits] = {}
    pool = ModelPool()
    for i, variant in enumerate(cfg.variants, 1):
        label = f"[{i}/{len(cfg.variants)}] {variant.name}"
        if variant.model_file:
            collected.add_model_file(evaluate_row(variant, found, cfg.data.interpolation, label),
                                     variant)
            continue
        size = variant.resolved_image_size()
        if size not in cache:
            cache[size] = load_splits(found, size, cfg)
        probs, collected.histories[variant.name], collected.specs[variant.name], \
            collected.keys[variant.name] = run_variant(variant, cache[size], data_key, cfg,
                                                       models_dir, retrain, label, pool,
                                                       cfg.evaluation.tta,
                                                       hand_over.get(variant.name, ()))
        collected.add_trained(variant, cache[size], found.root, probs, cfg.evaluation.tta)
    return next(iter(cache.values()), None)


def _provenance(cfg, found, checked, first: Splits | None, collected: Collected, hardware: dict,
                started: float) -> dict:
    skipped = first.skipped if first else ()
    extra = {"data": {"root": str(found.root), "fingerprint": collected.data_key,
                      "limit": cfg.data.limit,
                      "n_train": len(first.train.labels) if first else None,
                      "n_train_by_class": ({"benign": int((first.train.labels == 0).sum()),
                                            "malignant": int((first.train.labels == 1).sum())}
                                           if first else None),
                      "n_val": len(first.val.labels) if first else None,
                      "skipped_images": len(skipped), "skipped": [list(s) for s in skipped],
                      "preflight": checked.to_dict()},
             "overrides": list(cfg.overrides),
             "model_keys": collected.keys, "wall_seconds": round(time.perf_counter() - started, 1)}
    info = provenance.collect(cfg.to_dict(), cfg.seed, extra)
    info["hardware"] = hardware
    return info


def _run_locked(cfg, found: layout.DataLayout, checked: preflight.PreflightReport,
                out_dir: Path, models_dir: Path, retrain: bool, started: float,
                hardware: dict) -> list[dict]:
    """The body of ``run_benchmark`` once the data is checked and the folders are locked."""
    log.info("data: %s (train %d, test %d files)", found.root, len(found.train), len(found.test))
    collected = Collected()
    first = _run_variants(cfg, found, models_dir, retrain, collected)
    info = _provenance(cfg, found, checked, first, collected, hardware, started)
    clean, audit_summary = (leakage_audit(first, found.root, out_dir, cfg)
                            if cfg.evaluation.audit and first else (None, None))
    settings = EvalSettings(seed=cfg.seed, bootstrap_resamples=cfg.evaluation.bootstrap_resamples,
                            target_sensitivity=cfg.evaluation.target_sensitivity)
    rows = report.write_run(out_dir, pd.concat(collected.frames, ignore_index=True),
                            collected.specs, collected.histories, info,
                            pd.concat(collected.val_frames, ignore_index=True)
                            if collected.val_frames else None, settings, clean, audit_summary)
    log.info("wrote %s/ (index.html, results.json/csv/md, predictions.csv, plots) in %.0f s",
             out_dir, time.perf_counter() - started)
    return rows


def leakage_audit(splits: Splits, root: Path, out_dir: Path, cfg) -> tuple[set[str], dict]:
    """Near-duplicate audit over the run's own train/val/test images (audit_* files in
    ``out_dir``); returns the clean test files (relative names) and the summary."""
    from melanoma.evaluation import audit

    started = time.perf_counter()
    items = audit.items_from_splits(*((s.files, s.labels) for s in
                                      (splits.train, splits.val, splits.test)))
    pairs, summary = audit.run_audit(items, out_dir, cfg.evaluation.audit_min_corr,
                                     include_flips=cfg.evaluation.audit_include_flips,
                                     groups=audit.groups_for(items, root))
    clean = {relative_name(Path(f), root) for f in audit.clean_test_files(pairs, items)}
    log.info("audit: %d of %d test images have a duplicate (%d) or the same lesion in "
             "train/val; %d clean (%.1f s)", summary["n_test"] - len(clean), summary["n_test"],
             summary["test_with_duplicate_in_train_or_val"], len(clean),
             time.perf_counter() - started)
    return clean, summary
