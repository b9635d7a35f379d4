"""Evaluate existing model files on a test split: choose preprocessing, decode, predict.

    melanoma-bench evaluate models/*.h5 --data-dir ~/data/melanoma --out reports/original

Preprocessing comes from, in order: the project's sidecar, ``variant`` (``--variant``), the
original file-name convention (``..._samplewise...``, ``..._featurewise...``), else a
UserError asking for ``--variant``. A featurewise model without a stored mean takes a given
mean or computes it from the training split. Every row says which source was used.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data import layout, legacy
from melanoma.data.cache import DecodedCache, fit_preprocessing, open_or_build
from melanoma.data.loader import CacheBatches
from melanoma.data.preprocessing import PREPROCESSING, Preprocessing, get_preprocessing
from melanoma.evaluation.rows import EvalSettings
from melanoma.models.loading import LoadedModel, load
from melanoma.reporting import ownership
from melanoma.reporting import run_report as report
from melanoma.util import atomic, backend, locks, provenance
from melanoma.util.errors import UserError
from melanoma.util.names import printable, relative_name

log = logging.getLogger(__name__)

DECODER = "PIL"  # images.load_image: what flow_from_directory/load_img used
DEFAULT_BATCH_SIZE = 8  # the original notebook's validation/test batch
NAME_CONVENTION = ("featurewise", "samplewise")  # random_featurewise is featurewise


PROJECT_PIPELINE = "uint8 batches, preprocessed in the input layer, as run"


@dataclass(frozen=True)
class EvalOptions:
    """What the user said (CLI flags or a run config row); None means "work it out"."""

    variant: str | None = None  # preprocessing name
    featurewise_mean: tuple[float, float, float] | None = None
    trust_code: bool = False
    interpolation: str | None = None  # None -> the sidecar's, else "nearest"
    batch_size: int | None = None  # None -> the sidecar's val_batch_size, else 8
    val_dir: Path | None = None  # Benign/ and Malignant/: the threshold is chosen there
    # the report's: bootstrap seed and resamples, and a given threshold (the thr_* columns)
    settings: EvalSettings = field(default_factory=EvalSettings)


@dataclass
class EvalData:
    """The test files (and training and validation files, when there are any) of a data folder.

    Images are decoded once per (split, size, interpolation) into the on-disk decoded-image
    cache that ``run`` uses (``cache_dir``, default beside the generated data; a later
    evaluate or run of the same files decodes nothing) and read from it a batch at a time, so
    memory does not grow with the number of test images."""

    root: Path
    test: layout.Split
    train: layout.Split | None = None
    val: layout.Split | None = None  # --val-dir: where the threshold is chosen
    cache_dir: str | None = None  # the decoded-image cache (None: the default folder)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dir(cls, data_dir: str | Path, val_dir: str | Path | None = None) -> EvalData:
        """DIR holding Benign/ and Malignant/ is the test set itself; else DIR/test (and
        DIR/train when present: only a featurewise model without a stored mean needs it).
        ``val_dir`` holds Benign/ and Malignant/ (e.g. an import's val/ folder)."""
        folder = Path(data_dir).expanduser()
        val = None
        if val_dir is not None:
            val_dir = Path(val_dir).expanduser()
            if not layout.has_class_folders(val_dir):
                raise UserError(f"--val-dir {val_dir} must hold Benign/ and Malignant/ folders")
            val = layout.read_class_folders(val_dir)
        if layout.has_class_folders(folder):
            return cls(folder, layout.read_class_folders(folder), val=val)
        test_dir = layout.split_folder(folder, "test")
        if test_dir is not None and layout.split_folder(folder, "train") is None:
            return cls(folder, layout.read_class_folders(test_dir), val=val)
        found = layout.discover(folder)
        return cls(found.root, found.test, found.train, val)

    def images(self, split: str, size: int, interpolation: str) -> DecodedCache:
        key = (split, size, interpolation)
        if key not in self._cache:
            files = getattr(self, split)
            self._cache[key] = open_or_build(files.files, files.labels, size, interpolation,
                                             self.cache_dir)
        return self._cache[key]

    def relative(self, path: Path) -> str:
        return relative_name(path, self.root)  # escaped like run's: non-UTF-8 names work


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its predictions.csv lines, report spec and training history."""

    name: str
    predictions: pd.DataFrame
    spec: dict
    history: dict
    skipped: tuple
    val_predictions: pd.DataFrame | None = None  # on --val-dir


def name_convention(path: Path) -> str | None:
    """The preprocessing the original file names encode, if exactly one is named."""
    stem = path.name.lower()
    found = [name for name in NAME_CONVENTION if name in stem]
    return found[0] if len(found) == 1 else None


def choose_preprocessing(loaded: LoadedModel, options: EvalOptions) -> tuple[Preprocessing, str]:
    """The preprocessing variant (mean not yet resolved) and where it came from."""
    sidecar = loaded.sidecar
    if sidecar is not None:
        if options.variant and options.variant != sidecar["preprocessing"]:
            log.warning("warning: %s: its sidecar says %r; --preprocessing %s ignored",
                        loaded.path, sidecar["preprocessing"], options.variant)
        return (get_preprocessing(sidecar["preprocessing"], sidecar.get("featurewise_mean")),
                f"sidecar {loaded.path.with_suffix('.json').name}")
    if options.variant:
        return get_preprocessing(options.variant, options.featurewise_mean), "--variant"
    convention = name_convention(loaded.path)
    if convention:
        return (get_preprocessing(convention, options.featurewise_mean),
                f"file name convention (*{convention}*)")
    raise UserError(f"{loaded.path}: cannot tell which preprocessing it was trained with (no "
                    f"sidecar, no --variant, and its name contains neither 'samplewise' nor "
                    f"'featurewise'); pass --variant NAME (known: {', '.join(PREPROCESSING)})")


def resolve_mean(loaded: LoadedModel, preprocessing: Preprocessing, options: EvalOptions,
                 data: EvalData, interpolation: str) -> tuple[Preprocessing, str | None]:
    """Fill in a featurewise model's training mean; say where it came from."""
    if not preprocessing.needs_fit:
        return preprocessing, None
    if preprocessing.mean is not None:
        source = "sidecar" if loaded.sidecar else "--featurewise-mean"
        return preprocessing, source
    if data.train is None:
        raise UserError(f"{loaded.path}: featurewise model without a stored training mean: "
                        f"pass --featurewise-mean R,G,B (per-channel mean of x/255 over the "
                        f"training images) or a --data-dir with a train/ split to compute it")
    train = data.images("train", loaded.image_size, interpolation)
    if loaded.sidecar is not None:
        fitted, how = fit_preprocessing(preprocessing, train), "as run fits it"
    else:
        fitted, how = legacy.fit(train.pixels, preprocessing)
    return fitted, (f"computed from the {len(train.labels)} images of the train/ split of "
                    f"{data.root} at {loaded.image_size} px ({how})")


def file_digest(path: Path) -> str | None:
    """sha256 of a model file (None for a SavedModel folder)."""
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def default_name(loaded: LoadedModel) -> str:
    """The sidecar's variant name (so a run's rows match), else the file's stem."""
    variant = (loaded.sidecar or {}).get("variant")
    if isinstance(variant, dict) and variant.get("name"):
        return str(variant["name"])
    return loaded.path.stem if loaded.path.is_file() else loaded.path.name


@dataclass(frozen=True)
class Prepared:
    """A loaded model and how its inputs are made (decided once, used for test and val)."""

    loaded: LoadedModel
    preprocessing: Preprocessing
    source: str
    mean_source: str | None
    interpolation: str
    batch_size: int


def prepare(path: str | Path, data: EvalData, options: EvalOptions) -> Prepared:
    """Load the model and decide its preprocessing, resize and batch (UserError on any
    problem with the file)."""
    loaded = load(path, trust_code=options.trust_code)
    sidecar = loaded.sidecar or {}
    preprocessing, source = choose_preprocessing(loaded, options)
    interpolation = options.interpolation or sidecar.get("interpolation") or "nearest"
    preprocessing, mean_source = resolve_mean(loaded, preprocessing, options, data,
                                              interpolation)
    batch_size = (options.batch_size or (sidecar.get("variant") or {}).get("val_batch_size")
                  or DEFAULT_BATCH_SIZE)
    return Prepared(loaded, preprocessing, source, mean_source, interpolation, int(batch_size))


def predict_split(prep: Prepared, data: EvalData, split: str, name: str
                  ) -> tuple[pd.DataFrame, tuple]:
    """predictions.csv lines of one split (``variant,seed,file,label,prob_malignant``; the
    seed is the training seed a run's sidecar records, else 0) and its
    skipped files; a model trained by run is fed by run's own input path."""

    images = data.images(split, prep.loaded.image_size, prep.interpolation)
    if len(images.labels) == 0:
        raise UserError(f"no readable {split} images in "
                        f"{data.root if split == 'test' else 'the --val-dir'}")
    if prep.loaded.sidecar is not None:  # trained by run: the very same input path as run
        probs = prep.loaded.predict_uint8(
            CacheBatches(images, np.arange(len(images)), None, prep.batch_size,
                         pad_remainder=True), prep.preprocessing)
    else:
        probs = prep.loaded.predict_batches(legacy.batches(images.pixels, prep.preprocessing,
                                                           prep.batch_size))
    seed = int((prep.loaded.sidecar or {}).get("seed") or 0)  # training seed; 0: not known
    frame = pd.DataFrame({"variant": name, "seed": seed,
                          "file": [data.relative(f) for f in images.files],
                          "label": images.labels, "prob_malignant": probs})
    return frame, images.skipped


def describe(prep: Prepared) -> dict:
    """The report's spec columns of one evaluated model."""
    loaded, size, interpolation = prep.loaded, prep.loaded.image_size, prep.interpolation
    pipeline = PROJECT_PIPELINE if loaded.sidecar is not None else legacy.PIPELINE
    return {"model_file": str(loaded.path), "format": loaded.format,
            "sha256": file_digest(loaded.path), "image_size": size, "output": loaded.output,
            "preprocessing": prep.preprocessing.name, "preprocessing_source": prep.source,
            "featurewise_mean_source": prep.mean_source, "decoder": DECODER,
            "resize": f"{interpolation} to {size}x{size}", "pipeline": pipeline,
            "batch_size": prep.batch_size,
            **{k: loaded.sidecar[k] for k in ("keep_epoch", "kept_epoch")
               if k in (loaded.sidecar or {})},
            "spec": (f"{prep.preprocessing.describe()}; {DECODER} decode, {interpolation} resize "
                     f"to {size}px; {pipeline}; preprocessing from {prep.source}"
                     + (f", mean {prep.mean_source}" if prep.mean_source else ""))}


def evaluate_file(path: str | Path, data: EvalData, options: EvalOptions = EvalOptions(),
                  name: str | None = None) -> ModelResult:
    """Load one model, preprocess the test split (and ``data.val``) as it was trained,
    predict; UserError on any problem with the file."""
    prep = prepare(path, data, options)
    name = name or default_name(prep.loaded)
    predictions, skipped = predict_split(prep, data, "test", name)
    val = predict_split(prep, data, "val", name)[0] if data.val is not None else None
    spec = {**describe(prep), "trust_model_code": options.trust_code,  # for Grad-CAM later
            "featurewise_mean": prep.preprocessing.mean}
    return ModelResult(name, predictions, spec,
                       (prep.loaded.sidecar or {}).get("history", {}), skipped, val)


def unique_names(names: list[str]) -> list[str]:
    """Make row names unique by suffixing repeats with -2, -3, ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def predictions_of(results: list[ModelResult]) -> pd.DataFrame:
    return pd.concat([r.predictions for r in results], ignore_index=True)


def parse_mean(text: str | None) -> tuple[float, float, float] | None:
    """'R,G,B' (values of x/255, e.g. 0.80,0.62,0.53) -> a tuple; UserError if malformed."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise UserError(f"--featurewise-mean must be three numbers R,G,B (mean of x/255 per "
                        f"channel), got {text!r}")
    return values


def identity(config: dict, data: EvalData) -> dict:
    """What an evaluate report is of: the command's settings and models, and the data."""
    return ownership.run_identity(config, {"root": str(data.root), "n_test": len(data.test)})


def write_report(out_dir: Path, results: list[ModelResult], data: EvalData, failures: list,
                 config: dict, hardware: dict, seconds: float,
                 options: EvalOptions = EvalOptions()) -> list[dict]:
    """The same files as ``run`` (report.write_run), one row per evaluated model; the
    provenance lists the models that failed and why. With validation predictions the
    threshold is chosen on them as run chooses it (or ``options.settings.threshold`` is used)."""
    names = unique_names([printable(r.name) for r in results])  # file stems may be non-UTF-8
    results = [replace(r, name=n, predictions=r.predictions.assign(variant=n),
                       val_predictions=None if r.val_predictions is None
                       else r.val_predictions.assign(variant=n))
               for r, n in zip(results, names)]
    vals = [r.val_predictions for r in results if r.val_predictions is not None]
    skipped = sorted({s for r in results for s in r.skipped})
    info = provenance.collect(config, config.get("seed", 0), hardware, {
        "data": {"root": str(data.root), "n_test": len(data.test),
                 "n_train": None if data.train is None else len(data.train),
                 "n_val": None if data.val is None else len(data.val),
                 "skipped_images": len(skipped), "skipped": [list(s) for s in skipped]},
        "failed_models": failures, "wall_seconds": round(seconds, 1),
        ownership.FIELD: identity(config, data)})
    return report.write_run(Path(out_dir), predictions_of(results),
                            {r.name: r.spec for r in results},
                            {r.name: r.history for r in results}, info,
                            pd.concat(vals, ignore_index=True) if vals else None,
                            options.settings)


def evaluate_each(paths: list[Path], data: EvalData, options: EvalOptions,
                  names: list[str] | None = None, debug: bool = False) -> tuple[list, list]:
    """Every model in turn; a failure is one logged line and does not stop the others.
    Returns (results, failures as [path, message])."""
    from melanoma.util.errors import first_line

    results, failures = [], []
    for i, (path, name) in enumerate(zip(paths, names or [None] * len(paths)), 1):
        try:
            result = evaluate_file(path, data, options, name)
        except Exception as error:  # one line per model, never a traceback
            if debug and not isinstance(error, UserError):
                raise
            line = (str(error) if isinstance(error, UserError)
                    else f"{path}: unexpected {first_line(error)}")
            failures.append([str(path), line])
            log.error("melanoma-bench: error: %s", line)
            continue
        log.info("[%d/%d] %s: %s", i, len(paths), result.name, result.spec["spec"])
        results.append(result)
    return results, failures


def evaluate_models(paths: list[Path], data_dir: Path, out_dir: Path,
                    options: EvalOptions = EvalOptions(), names: list[str] | None = None,
                    config: dict | None = None, debug: bool = False,
                    overwrite: bool = False) -> tuple[list, list]:
    """Evaluate model files on ``data_dir`` and write the report to ``out_dir`` (when at
    least one model worked); returns (full-test rows, failures). An ``out_dir`` holding
    the report of other models or data is refused first, unless ``overwrite``."""
    import time

    if names is not None and len(names) != len(paths):
        raise UserError(f"--name given {len(names)} times for {len(paths)} models")
    data = EvalData.from_dir(data_dir, options.val_dir)
    layout.refuse_inside_data(data.root, {"--out": out_dir})
    atomic.check_room(out_dir, "--out folder")
    config = {**(config or {}), "models": [str(p) for p in paths], "seed": options.settings.seed}
    ownership.check_owner(out_dir, identity(config, data), overwrite)
    started = time.perf_counter()
    with locks.hold(out_dir):  # as run: no two commands write one folder at once
        atomic.sweep_stale(out_dir)
        hardware = backend.configure()
        log.info("data: %s (test %d files%s)", data.root, len(data.test),
                 "" if data.train is None else f", train {len(data.train)} files")
        results, failures = evaluate_each(paths, data, options, names, debug)
        rows = []
        if results:
            rows = write_report(out_dir, results, data, failures, config, hardware,
                                time.perf_counter() - started, options)
            log.info("wrote %s/ (results.json, results.csv, results.md, predictions.csv, "
                     "plots)", out_dir)
    return rows, failures


def evaluate_row(variant, found: layout.DataLayout, interpolation: str, label: str) -> ModelResult:
    """A run config row naming ``model_file`` (config.ModelFileRow): evaluated on the run's
    test split, not trained."""
    log.info("%s: evaluating %s (model_file: not trained)", label, variant.model_file)
    data = EvalData(found.root, found.test, found.train)
    options = EvalOptions(variant=None if variant.preprocessing == "auto" else variant.preprocessing,
                          trust_code=variant.trust_model_code, interpolation=interpolation,
                          batch_size=variant.val_batch_size)
    result = evaluate_file(variant.model_file, data, options, variant.name)
    published = {"published": dict(variant.published)} if variant.published else {}
    return replace(result, spec={**result.spec, "note": variant.note, **published})
