"""``melanoma-bench run``: train or load every configured variant, evaluate, write reports.

    melanoma-bench run                                # embedded data, CPU default config
    melanoma-bench run --config benchmarks/configs/paper.toml --data-dir ~/data/melanoma

Usable from Python too: ``run_benchmark(config.load(path), out_dir=Path("reports/x"))``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import config as config_mod
from melanoma import layout, lock, preflight, provenance, report, storage, synthetic
from melanoma.backbones import get_backbone
from melanoma.dataset import make_dataset, split_train_val
from melanoma.errors import UserError
from melanoma.images import LoadedImages, load_images, safe_name
from melanoma.loading import detect_format
from melanoma.model import resolve_weights
from melanoma.preprocessing import get_preprocessing
from melanoma.scoring import EvalSettings



def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the final table."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Splits:
    """Decoded train/val/test images at one input size."""

    train: LoadedImages
    val: LoadedImages
    test: LoadedImages
    skipped: tuple[tuple[str, str], ...]


def resolve_data_dir(cfg: config_mod.RunConfig, data_dir: Path | None) -> Path:
    """--data-dir, else the config's data.dir, else the generated synthetic set."""
    chosen = data_dir or cfg.data.dir
    if chosen:
        return Path(chosen).expanduser()
    spec = cfg.data.synthetic
    log(f"data: no --data-dir given; using the generated synthetic set ({spec.n_train_per_class}"
        f"+{spec.n_test_per_class} images per class, {spec.image_size}px, seed {spec.seed})")
    return synthetic.ensure_dataset(spec)


def fingerprint(files) -> str:
    """Content hash of the data set's files (names relative to nothing: bytes and order)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(Path(path).name))  # non-UTF-8 names too
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def _subset(images: LoadedImages, index: np.ndarray) -> LoadedImages:
    return LoadedImages(images.pixels[index], images.labels[index],
                        tuple(images.files[i] for i in index), ())


def load_splits(found: layout.DataLayout, size: int, cfg: config_mod.RunConfig) -> Splits:
    """Decode train and test at ``size`` and split train 85/15 (stratified, seeded)."""
    interpolation = cfg.data.interpolation
    train_all = load_images(found.train.files, found.train.labels, size, interpolation)
    test = load_images(found.test.files, found.test.labels, size, interpolation)
    for split_name, loaded in (("train", train_all), ("test", test)):
        if len(set(loaded.labels.tolist())) < 2:
            raise UserError(f"{split_name}/ has fewer than two readable classes after skipping "
                            f"{len(loaded.skipped)} unreadable files")
    train_index, val_index = split_train_val(train_all.labels, cfg.data.val_fraction, cfg.seed)
    return Splits(_subset(train_all, train_index), _subset(train_all, val_index), test,
                  train_all.skipped + test.skipped)


def check_variants(cfg: config_mod.RunConfig) -> None:
    """Fail before any work if a variant's weights are unavailable."""
    for variant in cfg.variants:
        if variant.model_file:  # evaluated, not trained: only the file must be there
            detect_format(Path(variant.model_file).expanduser())
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
            "spec": preprocessing.describe(), "note": variant.note}


def train_variant(variant, splits: Splits, preprocessing, seed: int, label: str, pool,
                  checkpoint_dir: Path | None = None):
    """Train one variant (on a fresh or reset model from ``pool``), resuming from
    ``checkpoint_dir`` when it holds a saved epoch; returns (model, history)."""
    import keras

    from melanoma import training
    from melanoma.model import build_classifier

    def build():
        # Seeding here, not per variant: a new global seed makes TF retrace the pooled
        # model's step (~7 s for B0); data order and augmentation have explicit seeds.
        keras.utils.set_random_seed(seed)
        return build_classifier(variant.backbone, variant.resolved_image_size(), variant.weights,
                                variant.head_units, variant.dropout, variant.freeze_backbone,
                                variant.bn_momentum)

    model = pool.get(variant.architecture_key(seed), build, variant.learning_rate)
    train_data = make_dataset(splits.train.pixels, splits.train.labels, variant.batch_size,
                              preprocessing, variant.augmentation, shuffle=True, seed=seed)
    val_data = make_dataset(splits.val.pixels, None, variant.val_batch_size, preprocessing)
    history = training.fit(model, train_data, val_data, splits.val.labels, variant.epochs, label,
                           checkpoint_dir=checkpoint_dir)
    return model, history


def predict(model, images: LoadedImages, preprocessing, batch_size: int) -> np.ndarray:
    """Malignant-class probabilities for ``images``."""
    data = make_dataset(images.pixels, None, batch_size, preprocessing)
    return model.predict(data, verbose=0)[:, 1].astype(np.float64)


TTA_FLIPS = (lambda x: x, lambda x: x[:, :, ::-1], lambda x: x[:, ::-1], lambda x: x[:, ::-1, ::-1])
TTA_SUFFIX = "+tta"


def predict_tta(model, images: LoadedImages, preprocessing, batch_size: int) -> np.ndarray:
    """Test-time augmentation: the mean probability over identity, horizontal, vertical and
    both flips (applied to the uint8 pixels, before preprocessing, as training's flips)."""
    runs = [predict(model, LoadedImages(np.ascontiguousarray(flip(images.pixels)), images.labels,
                                        images.files, ()), preprocessing, batch_size)
            for flip in TTA_FLIPS]
    return np.mean(runs, axis=0)


def predict_splits(model, splits: Splits, preprocessing, batch_size: int,
                   tta: bool) -> dict[str, np.ndarray]:
    """{"test", "val"} probabilities, plus {"test+tta", "val+tta"} when ``tta``."""
    out = {"test": predict(model, splits.test, preprocessing, batch_size),
           "val": predict(model, splits.val, preprocessing, batch_size)}
    if tta:
        for split in ("test", "val"):
            out[split + TTA_SUFFIX] = predict_tta(model, getattr(splits, split), preprocessing,
                                                  batch_size)
    return out


def run_variant(variant, splits: Splits, data_key: str, cfg, models_dir: Path, retrain: bool,
                label: str, pool, tta: bool = False):
    """Train or load one variant; returns ({split: probabilities}, history, spec, model key)."""
    key = variant.model_key(data_key, cfg.seed, cfg.data.val_fraction, cfg.data.interpolation)
    cached = None if retrain else storage.find(models_dir, key)
    if cached is not None:
        log(f"{label}: loading {cached.model_path} (same config; --retrain to train again)")
        model = storage.load(cached)
        preprocessing = get_preprocessing(variant.preprocessing,
                                          cached.sidecar.get("featurewise_mean"))
        history = cached.sidecar.get("history", {})
    else:
        preprocessing = get_preprocessing(variant.preprocessing).fit(splits.train.pixels)
        log(f"{label}: training {variant.epochs} epochs on {len(splits.train.labels)} images "
            f"({len(splits.val.labels)} for validation)")
        started = time.perf_counter()
        checkpoints = storage.checkpoint_dir(models_dir, variant.name, key)
        if retrain:
            shutil.rmtree(checkpoints, ignore_errors=True)
        model, history = train_variant(variant, splits, preprocessing, cfg.seed, label, pool,
                                       checkpoints)
        saved = storage.save(model, models_dir, variant.name, key, {
            "variant": asdict(variant), "image_size": variant.resolved_image_size(),
            "preprocessing": variant.preprocessing, "featurewise_mean": preprocessing.mean,
            "interpolation": cfg.data.interpolation,
            "history": history, "train_seconds": round(time.perf_counter() - started, 1),
            "versions": provenance.package_versions()})
        shutil.rmtree(checkpoints, ignore_errors=True)  # the final model replaces them
        log(f"{label}: saved {saved.model_path}")
    probs = predict_splits(model, splits, preprocessing, variant.val_batch_size, tta)
    return probs, history, variant_spec(variant, preprocessing), key


def run_benchmark(cfg: config_mod.RunConfig, data_dir: Path | None = None,
                  out_dir: Path | None = None, models_dir: Path = Path("models"),
                  retrain: bool = False, strict: bool = False) -> list[dict]:
    """Train or load every variant of ``cfg`` and write the report; returns the rows.
    ``strict``: any pre-flight warning about the data is an error, before any training."""
    started = time.perf_counter()
    check_variants(cfg)
    found = layout.discover(resolve_data_dir(cfg, data_dir))
    checked = preflight.check(found, strict)
    log(checked.summary())
    out_dir = Path(out_dir or Path("reports") / cfg.name)
    trains = any(not v.model_file for v in cfg.variants)  # model-file rows need no models/
    # a second run on the same folders fails fast instead of writing beside this one
    with lock.hold(out_dir, *([models_dir] if trains else [])):
        return _run_locked(cfg, found, checked, out_dir, Path(models_dir), retrain, started)


def _run_locked(cfg, found: layout.DataLayout, checked: preflight.PreflightReport,
                out_dir: Path, models_dir: Path, retrain: bool, started: float) -> list[dict]:
    """The body of ``run_benchmark`` once the data is checked and the folders are locked."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices for each new model are noise here
    hardware = provenance.devices()
    log(f"device: {provenance.describe_device(hardware)}")
    if not hardware["gpus"]:
        tf.config.experimental.enable_op_determinism()
    log(f"data: {found.root} (train {len(found.train)}, test {len(found.test)} files)")
    data_key = fingerprint(found.train.files + found.test.files)
    cache: dict[int, Splits] = {}
    from melanoma.training import ModelPool

    pool = ModelPool()
    frames, val_frames, specs, histories, keys = [], [], {}, {}, {}
    for i, variant in enumerate(cfg.variants, 1):
        label = f"[{i}/{len(cfg.variants)}] {variant.name}"
        if variant.model_file:
            from melanoma.evaluation import evaluate_row

            result = evaluate_row(variant, found, cfg.data.interpolation, label)
            frames.append(result.predictions)
            specs[variant.name], histories[variant.name] = result.spec, result.history
            keys[variant.name] = result.spec["sha256"] or variant.model_file
            continue
        size = variant.resolved_image_size()
        if size not in cache:
            cache[size] = load_splits(found, size, cfg)
        splits = cache[size]
        probs, histories[variant.name], specs[variant.name], keys[variant.name] = run_variant(
            variant, splits, data_key, cfg, models_dir, retrain, label, pool,
            cfg.evaluation.tta)
        for suffix in ("", TTA_SUFFIX) if cfg.evaluation.tta else ("",):
            name = variant.name + suffix
            if suffix:
                specs[name] = {**specs[variant.name], "spec": specs[variant.name]["spec"]
                               + " | TTA: mean over identity, h, v, h+v flips"}
            for split, target in (("test", frames), ("val", val_frames)):
                images = getattr(splits, split)
                target.append(pd.DataFrame({
                    "variant": name, "file": [relative(f, found.root) for f in images.files],
                    "label": images.labels, "prob_malignant": probs[split + suffix]}))
    first = next(iter(cache.values()), None)  # None when every row is a model_file
    skipped = first.skipped if first else ()
    extra = {"data": {"root": str(found.root), "fingerprint": data_key,
                      "n_train": len(first.train.labels) if first else None,
                      "n_val": len(first.val.labels) if first else None,
                      "skipped_images": len(skipped), "skipped": [list(s) for s in skipped],
                      "preflight": checked.to_dict()},
             "model_keys": keys, "wall_seconds": round(time.perf_counter() - started, 1)}
    info = provenance.collect(cfg.to_dict(), cfg.seed, extra)
    info["hardware"] = hardware
    clean, audit_summary = (leakage_audit(first, found.root, out_dir, cfg)
                            if cfg.evaluation.audit and first else (None, None))
    settings = EvalSettings(seed=cfg.seed, bootstrap_resamples=cfg.evaluation.bootstrap_resamples,
                            target_sensitivity=cfg.evaluation.target_sensitivity)
    rows = report.write_run(out_dir, pd.concat(frames, ignore_index=True), specs, histories,
                            info, pd.concat(val_frames, ignore_index=True) if val_frames else None,
                            settings, clean,
                            audit_summary)
    log(f"wrote {out_dir}/ (index.html, results.json/csv/md, predictions.csv, plots) "
        f"in {time.perf_counter() - started:.0f} s")
    return rows


def leakage_audit(splits: Splits, root: Path, out_dir: Path, cfg) -> tuple[set[str], dict]:
    """Near-duplicate audit over the run's own train/val/test images (audit_* files in
    ``out_dir``); returns the clean test files (relative names) and the summary."""
    from melanoma import audit

    started = time.perf_counter()
    items = audit.items_from_splits(*((s.files, s.labels) for s in
                                      (splits.train, splits.val, splits.test)))
    pairs, summary = audit.run_audit(items, out_dir, cfg.evaluation.audit_max_distance)
    clean = {relative(Path(f), root) for f in audit.clean_test_files(pairs, items)}
    log(f"audit: {summary['test_with_duplicate_in_train_or_val']} of {summary['n_test']} test "
        f"images have a near-duplicate in train/val; {len(clean)} clean "
        f"({time.perf_counter() - started:.1f} s)")
    return clean, summary


def relative(path: Path, root: Path) -> str:
    """A test file's name relative to the data root, with forward slashes."""
    try:
        return safe_name(Path(path).relative_to(root).as_posix())
    except ValueError:
        return safe_name(Path(path).as_posix())
