"""Benchmark configuration: a TOML or YAML file -> frozen dataclasses, validated.

A config has top-level ``name``, ``seed`` (the train/val split; also the training seed
unless ``seeds = [..]`` lists several: one model per variant and seed), a ``[data]`` table
(optionally ``[data.synthetic]`` for the generated default set), a ``[defaults]`` table
applied to every variant, and a ``[[variants]]`` list. Unknown keys and invalid values are
user errors with one clear line (and a "did you mean" for typos)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

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
from melanoma.config.schema import _build, _check_keys, _checked, _no_key, _table
from melanoma.config.tune import HEAD_KEYS, TuneConfig, load_tuned_head, parse_tune
from melanoma.data.augmentation import Augmentation
from melanoma.data.decode import INTERPOLATIONS
from melanoma.data.preprocessing import get_preprocessing
from melanoma.data.synthetic import SyntheticSpec
from melanoma.evaluation.rows import EvalSettings
from melanoma.models.backbones import MIN_IMAGE_SIZE, check_own_code, get_backbone
from melanoma.util.errors import UserError, unknown_name
from melanoma.util.keys import digest
from melanoma.util.names import check_safe_name

log = logging.getLogger(__name__)


# The [defaults] of the shipped default config (melanoma/configs/default.toml): a config that
# leaves a key out gets exactly what `melanoma-bench run` uses, never a silent B6/ImageNet job.
DEFAULT_AUGMENTATION = Augmentation(rotation_deg=20.0, shear_deg=0.2, horizontal_flip=True,
                                    vertical_flip=True)


@dataclass(frozen=True)
class VariantConfig:
    """One row of the benchmark: everything that determines the trained model.

    Every field enters the model's cache key unless it is declared with ``_no_key``; each
    field's validation sits beside it (``_checked``)."""

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
    mixed_precision: bool = False  # GPU: mixed_float16; the softmax stays float32
    jit_compile: bool | str = _checked("auto", jit_compile_check)  # XLA: true|false|"auto"
    # earlier versions' placement of the warp (tf.data or the model): accepted and ignored,
    # with a note; augmentation and preprocessing always run inside the model now
    augment_on: str = _no_key("auto", check=augment_on_check)
    # class imbalance: loss weights per class ("balanced": n / (2 n_class), sklearn's rule)
    # and/or each epoch oversampling the minority class to the majority's count
    class_weight: str | dict = _checked("none", class_weight_check)
    balanced_sampling: bool = False
    # the weights saved: of the last epoch, or of the epoch with the best validation AUC
    keep_epoch: str = _checked("last", lambda v: None if v in ("last", "best")
                               else 'must be "last" or "best"')
    note: str = _no_key("")  # free text printed in the report
    trust_model_code: bool = _no_key(False)  # consent to run an own backbone builder's code
    model_file: ClassVar[None] = None  # a trained row; ModelFileRow names an existing file
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
                                               "freeze_backbone", "bn_momentum",
                                               "mixed_precision", "jit_compile")}
        spec.update(image_size=self.resolved_image_size(), seed=seed)
        return _digest(spec)

    def recipe(self) -> dict:
        """Every field that changes the trained weights (all but those declared ``_no_key``),
        with the image size resolved: the variant's part of the model key."""
        spec = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("key", True)}
        spec.update(augmentation=dataclasses.asdict(self.augmentation),
                    image_size=self.resolved_image_size())
        return spec

    def model_key(self, data_fingerprint: str, seed: int, val_fraction: float,
                  interpolation: str, split_seed: int | None = None,
                  context: dict | None = None) -> str:
        """Hash of the full training recipe (:func:`training_recipe`)."""
        return recipe_key(training_recipe(self, data_fingerprint, seed, val_fraction,
                                          interpolation, split_seed, context))

    def continuation_key(self, data_fingerprint: str, seed: int, val_fraction: float,
                         interpolation: str, split_seed: int | None = None,
                         context: dict | None = None) -> str:
        """The model key without the epoch count: two variants with the same continuation key
        differ only in how long they train, so the longer one's first epochs ARE the shorter
        one's training (same seed, data order and augmentation) and can continue from it."""
        return dataclasses.replace(self, epochs=1).model_key(
            data_fingerprint, seed, val_fraction, interpolation, split_seed, context)


# The model key's format: bump it when what the recipe holds changes meaning (saved models
# then train again once) instead of adding per-field compatibility branches.
KEY_FORMAT = 2


def training_recipe(variant: VariantConfig, data_fingerprint: str, seed: int,
                    val_fraction: float, interpolation: str, split_seed: int | None = None,
                    context: dict | None = None) -> dict:
    """Everything that changes a job's weights: the variant's recipe, the data (names, bytes
    and labels), the training seed, the split (its seed and fraction), the resize filter,
    and the run's ``context`` resolved on the machine (the augmentation placement, the Keras
    backend, a cross-validation fold)."""
    return {"format": KEY_FORMAT, "variant": variant.recipe(), "data": data_fingerprint,
            "seed": seed, "split_seed": seed if split_seed is None else split_seed,
            "val_fraction": val_fraction, "interpolation": interpolation, **(context or {})}


def recipe_key(recipe: dict) -> str:
    """The model key: a hash of a :func:`training_recipe`."""
    return _digest(recipe)


_digest = digest


@dataclass(frozen=True)
class ModelFileRow:
    """A row that evaluates an existing model file instead of training one
    (``model_file = "..."``): only what evaluating a file needs. [defaults] keys that are
    fields here apply; the training ones do not."""

    name: str
    model_file: str = ""
    preprocessing: str = "auto"  # "auto": the model's sidecar, else its file name's convention
    trust_model_code: bool = False  # let model_file contain code (Lambda, SavedModel)
    val_batch_size: int = _checked(64, positive_int)
    note: str = ""  # free text printed in the report
    published: dict | None = field(default=None, hash=False,
                                   metadata={"check": published_check})


def _model_file_row(table: dict, defaults: dict, where: str) -> ModelFileRow:
    """A ``model_file`` row: its own keys, plus the [defaults] that apply to a file."""
    known = {f.name for f in fields(ModelFileRow)}
    misplaced = [k for k in table if k not in known and k in {f.name for f in fields(VariantConfig)}]
    if misplaced:
        raise UserError(f"{where}: {', '.join(misplaced)} cannot be set on a model_file row "
                        f"(the file is evaluated, not trained)")
    merged = {**{k: v for k, v in defaults.items() if k in known}, **table}
    row = _build(ModelFileRow, merged, where)
    if row.preprocessing != "auto":
        get_preprocessing(row.preprocessing)
    return row



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

    def settings(self, seed: int) -> EvalSettings:
        """What the metric rows need of this table (with the bootstrap's seed)."""
        return EvalSettings(seed=seed, bootstrap_resamples=self.bootstrap_resamples,
                            target_sensitivity=self.target_sensitivity)


@dataclass(frozen=True)
class RunConfig:
    """A whole benchmark: data, seed and the variants (rows) to train or load."""

    name: str
    variants: tuple[VariantConfig | ModelFileRow, ...]  # trained rows and model-file rows
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


def _variant(table: dict, defaults: dict, index: int, base_dir: Path | None = None
             ) -> VariantConfig | ModelFileRow:
    merged = {**defaults, **table}
    where = f"variant {merged.get('name', f'#{index + 1}')!r}"
    if "name" not in merged:
        raise UserError(f"variant #{index + 1} has no name")
    check_safe_name(merged["name"], f"{where}: name")  # it names model files and figures
    if merged.get("model_file"):
        return _model_file_row(table, defaults, where)
    # [defaults] may hold keys meant for model-file rows; a trained row has no use for them
    defaults = {k: v for k, v in defaults.items() if k != "model_file"}
    merged = {**defaults, **table}
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
    variant = _build(VariantConfig, merged, where)
    if isinstance(variant.class_weight, dict):  # one spelling per value: 4 and 4.0 same key
        variant = dataclasses.replace(variant, class_weight={
            k: float(variant.class_weight[k]) for k in CLASS_NAMES})
    validate_variant(variant, where)
    return variant


def validate_variant(v: VariantConfig, where: str) -> None:
    """The checks that involve other registries or several fields (the per-field ones run
    in ``_build``)."""
    spec = get_backbone(v.backbone)
    check_own_code(spec, v.trust_model_code, where)
    if v.image_size is not None and v.image_size < spec.min_size:
        raise UserError(f"{where}: image_size {v.image_size} is below {spec.label}'s minimum of "
                        f"{spec.min_size}")
    get_preprocessing(v.preprocessing)
    if v.augment_on != "auto":
        log.warning("%s: augment_on = %r is ignored: augmentation and preprocessing always "
                    "run inside the model, on every backend (docs/gpu.md)", where, v.augment_on)
    aug = v.augmentation
    if aug.rotation_deg < 0 or not 0 <= aug.shear_deg < 90:
        raise UserError(f"{where}: augmentation rotation_deg must be >= 0 and shear_deg in [0, 90)")


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
    tune = parse_tune(tune_table, names, top.seed)
    if tune is not None:
        base = next(v for v in rows if v.name == (tune.variant or rows[0].name))
        if isinstance(base, ModelFileRow):
            raise UserError(f"tune: variant {base.name!r} names an existing model file; the "
                            f"search needs a trained row (set tune.variant)")
    return dataclasses.replace(top, tune=tune, source=source,
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
