"""Benchmark configuration: a TOML or YAML file -> frozen dataclasses, validated.

A config has top-level ``name``, ``seed`` (the train/val split; also the training seed
unless ``seeds = [..]`` lists several: one model per variant and seed), a ``[data]`` table
(optionally ``[data.synthetic]`` for the generated default set), a ``[defaults]`` table
applied to every variant, and a ``[[variants]]`` list. Unknown keys and invalid values are
user errors with one clear line (and a "did you mean" for typos)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

from melanoma.config.checks import (
    CLASS_NAMES,
    MAX_IMAGE_SIZE,
    augment_on_check,
    class_weight_check,
    finite_positive,
    image_size_check,
    jit_compile_check,
    non_negative_int,
    open_unit_interval,
    positive_int,
    published_check,
    seeds_check,
    unit_interval_open_right,
)
from melanoma.config.files import SHIPPED, read_raw, resolve, shipped_names  # noqa: F401
from melanoma.config.overrides import apply as apply_overrides
from melanoma.config.report import EnsembleConfig, ReportConfig, parse_report
from melanoma.config.run_keys import cv_folds_check, mlflow_check
from melanoma.config.tune import HEAD_KEYS, TuneConfig, load_tuned_head, parse_tune
from melanoma.data.augmentation import Augmentation
from melanoma.data.decode import INTERPOLATIONS
from melanoma.data.preprocessing import get_preprocessing
from melanoma.data.synthetic import SyntheticSpec
from melanoma.models.backbones import MIN_IMAGE_SIZE, get_backbone
from melanoma.util.errors import UserError, unknown_name
from melanoma.util.names import check_safe_name

log = logging.getLogger(__name__)


def _no_key(default, **more):
    """A field that does NOT enter the model's cache key (names, notes, file pointers)."""
    return field(default=default, metadata={"key": False, **more})


def _checked(default, check, **more):
    """A field validated by ``check(value) -> error text or None`` (beside its declaration)."""
    return field(default=default, metadata={"check": check, **more})


def _key_if_set(default, check=None):
    """A field added after models were cached: it enters the model's cache key only when it
    differs from ``default``, so models trained before it existed keep their keys."""
    return field(default=default, metadata={"check": check, "key_if_set": True})


# The [defaults] of the shipped default config (melanoma/configs/default.toml): a config that
# leaves a key out gets exactly what `melanoma-bench run` uses, never a silent B6/ImageNet job.
DEFAULT_AUGMENTATION = Augmentation(rotation_deg=20.0, shear_deg=0.2, horizontal_flip=True,
                                    vertical_flip=True)


@dataclass(frozen=True)
class VariantConfig:
    """One row of the benchmark: everything that determines the trained model.

    Every field enters the model's cache key unless it is declared with ``_no_key``
    (``_key_if_set``: only when not at its default); each field's validation sits beside it
    (``_checked``)."""

    name: str = field(metadata={"key": False})
    preprocessing: str = "samplewise"
    backbone: str = "B0"
    image_size: int | None = _checked(64, image_size_check)  # None -> the backbone's default
    weights: str = "none"  # "imagenet" | "none" | path to a weights file
    epochs: int = _checked(8, positive_int)
    learning_rate: float = _checked(1e-3, finite_positive)
    batch_size: int = _checked(32, positive_int)
    val_batch_size: int = _checked(64, positive_int)
    head_units: int = _checked(128, positive_int)
    dropout: float = _checked(0.0, unit_interval_open_right)
    freeze_backbone: bool = False
    bn_momentum: float | None = _checked(0.9, lambda v: None if v is None or 0 < v < 1
                                         else "must be in (0, 1)")  # None -> Keras' 0.99
    augmentation: Augmentation = field(default_factory=lambda: DEFAULT_AUGMENTATION)
    mixed_precision: bool = _key_if_set(False)  # GPU: mixed_float16; the softmax stays float32
    jit_compile: bool | str = _key_if_set("auto", jit_compile_check)  # XLA: true|false|"auto"
    # earlier versions' placement of the warp (tf.data or the model): accepted and ignored,
    # with a note; augmentation and preprocessing always run inside the model now
    augment_on: str = _no_key("auto", check=augment_on_check)
    # class imbalance: loss weights per class ("balanced": n / (2 n_class), sklearn's rule)
    # and/or each epoch oversampling the minority class to the majority's count
    class_weight: str | dict = _key_if_set("none", class_weight_check)
    balanced_sampling: bool = _key_if_set(False)
    note: str = _no_key("")  # free text printed in the report
    model_file: str | None = _no_key(None)  # evaluate this existing model instead of training
    trust_model_code: bool = _no_key(False)  # let model_file contain code (Lambda, SavedModel)
    head: str = _no_key("")  # "tuned:PATH": head_units/dropout/learning_rate from tune
    # the original paper's numbers for this row: the report says whether each lies inside
    # the reproduced interval
    published: dict | None = field(default=None, hash=False,
                                   metadata={"key": False, "check": published_check})

    def resolved_image_size(self) -> int:
        size = self.image_size or get_backbone(self.backbone).default_size
        return int(size)

    def architecture_key(self, seed: int | None) -> str:
        """Hash of what fixes the network and (unless ``seed`` is None) its seeded initial
        weights (see ModelPool)."""
        spec = {k: getattr(self, k) for k in ("backbone", "weights", "head_units", "dropout",
                                               "freeze_backbone", "bn_momentum")}
        if self.mixed_precision or self.jit_compile != "auto":  # keys of older models unchanged
            spec.update(mixed_precision=self.mixed_precision, jit_compile=self.jit_compile)
        spec.update(image_size=self.resolved_image_size(), seed=seed)
        return _digest(spec)

    def model_key(self, data_fingerprint: str, seed: int, val_fraction: float,
                  interpolation: str, split_seed: int | None = None) -> str:
        """Hash of everything that changes the trained model: every field not declared
        ``_no_key``, and the data, training seed, split and resize filter. ``split_seed`` (the
        config's ``seed``, which draws the train/val split) enters only when it differs from
        the training ``seed``: one seed equal to the config's gives the keys of older runs."""
        spec = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("key", True)
                and not (f.metadata.get("key_if_set") and getattr(self, f.name) == f.default)}
        spec.update(augmentation=dataclasses.asdict(self.augmentation),
                    image_size=self.resolved_image_size(), data=data_fingerprint, seed=seed,
                    val_fraction=val_fraction, interpolation=interpolation)
        if split_seed is not None and split_seed != seed:
            spec["split_seed"] = split_seed
        return _digest(spec)

    def continuation_key(self, data_fingerprint: str, seed: int, val_fraction: float,
                         interpolation: str, split_seed: int | None = None) -> str:
        """The model key without the epoch count: two variants with the same continuation key
        differ only in how long they train, so the longer one's first epochs ARE the shorter
        one's training (same seed, data order and augmentation) and can continue from it."""
        return dataclasses.replace(self, epochs=1).model_key(data_fingerprint, seed,
                                                             val_fraction, interpolation,
                                                             split_seed)


def _digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are read."""

    dir: str | None = None  # None -> the generated synthetic set
    val_fraction: float = _checked(0.15, open_unit_interval)
    interpolation: str = "nearest"
    limit: int | None = _checked(None, lambda v: None if v is None or (isinstance(v, int) and v >= 2)
                                 else "must be an integer >= 2 (images per class and split)")
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    cache_dir: str | None = None  # decoded-image cache (None: beside the synthetic data)
    cv_folds: int | None = _checked(None, cv_folds_check)  # k-fold CV of train/ (docs/cross_validation.md)
    cv_average: bool = False  # with cv_folds: a "<variant> (k-fold mean)" row of the fold models


@dataclass(frozen=True)
class EvaluationConfig:
    """How predictions become the report: intervals, operating point, TTA, leakage audit."""

    bootstrap_resamples: int = _checked(1000, positive_int)  # stratified resamples per interval
    target_sensitivity: float | None = _checked(
        None, lambda v: None if v is None or 0 < v <= 1 else "must be in (0, 1]")  # None: Youden
    tta: bool = False  # also report each variant averaged over flips, as its own row
    audit: bool = True  # near-duplicate audit; metrics also on the clean test subset
    # the duplicate detector's band-pass correlation threshold (docs/duplicate_audit.md)
    audit_min_corr: float = _checked(0.95, lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    audit_include_flips: bool = False  # also match flipped and 90-degree rotated copies


@dataclass(frozen=True)
class RunConfig:
    """A whole benchmark: data, seed and the variants (rows) to train or load."""

    name: str
    variants: tuple[VariantConfig, ...]
    seed: int = _checked(42, non_negative_int)  # the train/val split (and the one training seed)
    seeds: tuple[int, ...] | None = _checked(None, seeds_check)  # training seeds: one model each
    data: DataConfig = field(default_factory=DataConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tune: TuneConfig | None = None  # the [tune] table (melanoma-bench tune)
    report: ReportConfig = field(default_factory=ReportConfig)  # [report]: galleries, Grad-CAM
    ensembles: tuple[EnsembleConfig, ...] = ()  # [[ensembles]]: rows from saved predictions
    source: str = ""  # the file it was read from
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE items applied on top of the file
    tensorboard: bool = True  # per-epoch scalars in <out>/tensorboard/<variant>/seed-<n>
    mlflow: bool = _checked(False, mlflow_check)  # log new trainings to MLflow ($MLFLOW_TRACKING_URI)

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The seeds each variant is trained with (``seeds``, else the one ``seed``)."""
        return tuple(self.seeds) if self.seeds is not None else (self.seed,)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_keys(table: dict, cls, where: str) -> None:
    known = {f.name for f in fields(cls)} - {"source", "overrides"}
    for key in table:
        if key not in known:
            raise unknown_name("key", key, sorted(known), where)


_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def _build(cls, table: dict, where: str):
    """``cls(**table)`` with each scalar type-checked by its annotation and each field's own
    ``check`` run: every failure is one UserError line naming ``where`` and the key."""
    _check_keys(table, cls, where)
    table = dict(table)
    for f in fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        kind = _KINDS.get(annotation.removesuffix(" | None"))
        if kind and f.name in table and not (table[f.name] is None and "None" in annotation):
            table[f.name] = _typed(table[f.name], kind, where, f.name)
    try:
        built = cls(**table)
    except TypeError as error:
        raise UserError(f"{where}: {error}") from None
    for f in fields(cls):
        check = f.metadata.get("check")
        problem = check(getattr(built, f.name)) if check else None
        if problem:
            raise UserError(f"{where}: {f.name} {problem}, got {getattr(built, f.name)!r}")
    return built


def _typed(value, kind, where: str, key: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _variant(table: dict, defaults: dict, index: int, base_dir: Path | None = None
             ) -> VariantConfig:
    merged = {**defaults, **table}
    where = f"variant {merged.get('name', f'#{index + 1}')!r}"
    if "name" not in merged:
        raise UserError(f"variant #{index + 1} has no name")
    check_safe_name(merged["name"], f"{where}: name")  # it names model files and figures
    if merged.get("head"):
        clash = [k for k in HEAD_KEYS if k in table]
        if "head" in table and clash:
            raise UserError(f"{where}: set either head = \"tuned:...\" or {', '.join(clash)}, "
                            f"not both")
        try:
            tuned = load_tuned_head(merged["head"], base_dir)
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
        merged = {**defaults, **tuned, **table}  # the row's own keys win over a default head
    aug = merged.pop("augmentation", None)
    if aug is not None and not isinstance(aug, dict):
        raise UserError(f"{where}: augmentation must be a table")
    base_aug = _table(defaults.get("augmentation"), "defaults.augmentation") \
        if "augmentation" in defaults else dataclasses.asdict(DEFAULT_AUGMENTATION)
    merged["augmentation"] = _build(Augmentation, {**base_aug, **(aug or {})},
                                    f"{where} augmentation")
    if merged.get("model_file") and "preprocessing" not in merged:
        merged["preprocessing"] = "auto"  # sidecar, else file name (evaluation.model_files)
    variant = _build(VariantConfig, merged, where)
    if isinstance(variant.class_weight, dict):  # one spelling per value: 4 and 4.0 same key
        variant = dataclasses.replace(variant, class_weight={
            k: float(variant.class_weight[k]) for k in CLASS_NAMES})
    validate_variant(variant, where)
    return variant


def validate_variant(v: VariantConfig, where: str) -> None:
    """The checks that involve other registries or several fields (the per-field ones run
    in ``_build``)."""
    get_backbone(v.backbone)
    if not (v.model_file and v.preprocessing == "auto"):
        get_preprocessing(v.preprocessing)
    if v.augment_on != "auto":
        log.warning("%s: augment_on = %r is ignored: augmentation and preprocessing always "
                    "run inside the model, on every backend (docs/gpu.md)", where, v.augment_on)
    aug = v.augmentation
    if aug.rotation_deg < 0 or not 0 <= aug.shear_deg < 90:
        raise UserError(f"{where}: augmentation rotation_deg must be >= 0 and shear_deg in [0, 90)")


def _table(value, where: str) -> dict:
    """A copy of a TOML table / YAML mapping (None -> empty), or a UserError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table, got {value!r}")
    return dict(value)


def _data(table: dict) -> DataConfig:
    synthetic = _build(SyntheticSpec, _table(table.pop("synthetic", None), "data.synthetic"),
                       "data.synthetic")
    data = _build(DataConfig, {**table, "synthetic": synthetic}, "data")
    if data.interpolation not in INTERPOLATIONS:
        raise unknown_name("interpolation", data.interpolation, INTERPOLATIONS, "data")
    for key in ("n_train_per_class", "n_test_per_class"):
        if getattr(synthetic, key) < 2:
            raise UserError(f"data.synthetic: {key} must be at least 2")
    if synthetic.image_size < MIN_IMAGE_SIZE or synthetic.image_size > MAX_IMAGE_SIZE:
        raise UserError(f"data.synthetic: image_size must be in [{MIN_IMAGE_SIZE}, "
                        f"{MAX_IMAGE_SIZE}]")
    return data


def _evaluation(table: dict) -> EvaluationConfig:
    ev = _build(EvaluationConfig, table, "evaluation")
    if ev.target_sensitivity is not None:
        ev = dataclasses.replace(ev, target_sensitivity=float(ev.target_sensitivity))
    return ev


def from_dict(raw: dict, source: str = "", overrides=()) -> RunConfig:
    """Build and validate a RunConfig from a parsed TOML/YAML mapping, after applying
    ``--set``-style ``overrides`` (see :mod:`melanoma.config.overrides`)."""
    raw = apply_overrides(raw, overrides)
    _check_keys({k: v for k, v in raw.items() if k != "defaults"}, RunConfig, "config")
    defaults = _table(raw.pop("defaults", None), "config: defaults")
    variants = raw.pop("variants", None)
    if not variants or not isinstance(variants, list):
        raise UserError("config: no [[variants]] listed")
    base_dir = Path(source).parent if source else None
    rows = tuple(_variant(_table(v, f"config: variant #{i + 1}"), dict(defaults), i, base_dir)
                 for i, v in enumerate(variants))
    names = [v.name for v in rows]
    if len(set(names)) != len(names):
        raise UserError(f"config: variant names must be unique, got {names}")
    data = _data(_table(raw.pop("data", None), "config: data"))
    evaluation = _evaluation(_table(raw.pop("evaluation", None), "config: evaluation"))
    tune_table = raw.pop("tune", None)
    report, ensembles = parse_report(raw.pop("report", None), raw.pop("ensembles", None), names)
    name = raw.pop("name", Path(source).stem or "run")
    check_safe_name(name, "config: name")  # it names the default output folder
    top = _build(RunConfig, {**raw, "name": name, "variants": rows, "data": data,
                             "evaluation": evaluation}, "config")
    if top.seeds is not None:
        top = dataclasses.replace(top, seeds=tuple(top.seeds))
    return dataclasses.replace(top, tune=parse_tune(tune_table, names, top.seed), source=source,
                               overrides=tuple(overrides), report=report, ensembles=ensembles)


def select_variants(cfg: RunConfig, names: list[str] | None) -> RunConfig:
    """Keep only the named variants (in the given order); unknown names list the known."""
    if not names:
        return cfg
    known = {v.name: v for v in cfg.variants}
    for name in names:
        if name not in known:
            raise unknown_name("variant", name, known)
    return dataclasses.replace(cfg, variants=tuple(known[n] for n in dict.fromkeys(names)))


def load(path: str | Path, overrides=()) -> RunConfig:
    """Read a .toml, .yaml or .yml config file (or a shipped config by name), then apply
    ``overrides`` (``["defaults.epochs=2", ...]``) and validate the whole."""
    path = resolve(path)
    return from_dict(read_raw(path), source=str(path), overrides=overrides)
