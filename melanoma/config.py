"""Benchmark configuration: a TOML or YAML file -> frozen dataclasses, validated.

A config has top-level ``name`` and ``seed``, a ``[data]`` table (optionally
``[data.synthetic]`` for the generated default set), a ``[defaults]`` table applied to every
variant, and a ``[[variants]]`` list. Unknown keys and invalid values are user errors with
one clear line (and a "did you mean" for typos).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .augmentation import Augmentation
from .backbones import MIN_IMAGE_SIZE, get_backbone
from .errors import UserError, unknown_name
from .images import INTERPOLATIONS
from .preprocessing import get_preprocessing
from .synthetic import SyntheticSpec
from .tune_config import HEAD_KEYS, TuneConfig, load_tuned_head, parse_tune


@dataclass(frozen=True)
class VariantConfig:
    """One row of the benchmark: everything that determines the trained model."""

    name: str
    preprocessing: str = "samplewise"
    backbone: str = "B6"
    image_size: int | None = None  # None -> the backbone's default (B6: 528)
    weights: str = "imagenet"  # "imagenet" | "none" | path to a weights file
    epochs: int = 10
    learning_rate: float = 1e-4
    batch_size: int = 16
    val_batch_size: int = 8
    head_units: int = 256
    dropout: float = 0.0
    freeze_backbone: bool = False
    bn_momentum: float | None = None  # None -> Keras' 0.99; short CPU runs need ~0.9
    augmentation: Augmentation = field(default_factory=Augmentation)
    note: str = ""  # free text printed in the report (not part of the model key)
    model_file: str | None = None  # evaluate this existing model instead of training one
    trust_model_code: bool = False  # let model_file contain code (Lambda, SavedModel)
    head: str = ""  # "tuned:PATH": head_units/dropout/learning_rate from melanoma-bench tune

    def resolved_image_size(self) -> int:
        size = self.image_size or get_backbone(self.backbone).default_size
        return int(size)

    def architecture_key(self, seed: int) -> str:
        """Hash of what fixes the network and its seeded initial weights (see ModelPool)."""
        spec = {k: getattr(self, k) for k in ("backbone", "weights", "head_units", "dropout",
                                               "freeze_backbone", "bn_momentum")}
        spec.update(image_size=self.resolved_image_size(), seed=seed)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def model_key(self, data_fingerprint: str, seed: int, val_fraction: float,
                  interpolation: str) -> str:
        """Hash of everything that changes the trained model (not the row's name or note)."""
        spec = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("name", "note", "head", "model_file", "trust_model_code")}
        spec.update(augmentation=dataclasses.asdict(self.augmentation),
                    image_size=self.resolved_image_size(), data=data_fingerprint, seed=seed,
                    val_fraction=val_fraction, interpolation=interpolation)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are read."""

    dir: str | None = None  # None -> the generated synthetic set
    val_fraction: float = 0.15
    interpolation: str = "nearest"
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)


@dataclass(frozen=True)
class EvaluationConfig:
    """How predictions become the report: intervals, operating point, TTA, leakage audit."""

    bootstrap_resamples: int = 1000  # stratified bootstrap resamples per 95% interval
    target_sensitivity: float | None = None  # None -> Youden's J on the validation split
    tta: bool = False  # also report each variant averaged over flips, as its own row
    audit: bool = True  # near-duplicate audit; metrics also on the clean test subset
    audit_max_distance: int = 12  # Hamming bits of the 16x16 average hash


@dataclass(frozen=True)
class RunConfig:
    """A whole benchmark: data, seed and the variants (rows) to train or load."""

    name: str
    variants: tuple[VariantConfig, ...]
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tune: TuneConfig | None = None  # the [tune] table (melanoma-bench tune)
    source: str = ""  # the file it was read from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_keys(table: dict, cls, where: str) -> None:
    known = {f.name for f in fields(cls)} - {"source"}
    for key in table:
        if key not in known:
            raise unknown_name("key", key, sorted(known), where)


_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def _build(cls, table: dict, where: str):
    _check_keys(table, cls, where)
    table = dict(table)
    for f in fields(cls):  # type-check scalars by annotation; ints become floats where declared
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        kind = _KINDS.get(annotation.removesuffix(" | None"))
        if kind and f.name in table and not (table[f.name] is None and "None" in annotation):
            table[f.name] = _typed(table[f.name], kind, where, f.name)
    try:
        return cls(**table)
    except TypeError as error:
        raise UserError(f"{where}: {error}") from None


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
    aug = merged.pop("augmentation", {}) or {}
    if not isinstance(aug, dict):
        raise UserError(f"{where}: augmentation must be a table")
    aug = {**_table(defaults.get("augmentation"), "defaults.augmentation"), **aug}
    merged["augmentation"] = _build(Augmentation, aug, f"{where} augmentation")
    if merged.get("model_file") and "preprocessing" not in merged:
        merged["preprocessing"] = "auto"  # sidecar, else file name (melanoma.evaluation)
    variant = _build(VariantConfig, merged, where)
    validate_variant(variant, where)
    return variant


def validate_variant(v: VariantConfig, where: str) -> None:
    """Raise UserError for values no run could use."""
    for key in ("epochs", "batch_size", "val_batch_size", "head_units"):
        if _typed(getattr(v, key), int, where, key) <= 0:
            raise UserError(f"{where}: {key} must be a positive integer, got {getattr(v, key)}")
    if not _typed(v.learning_rate, float, where, "learning_rate") > 0:
        raise UserError(f"{where}: learning_rate must be positive, got {v.learning_rate}")
    if not 0 <= _typed(v.dropout, float, where, "dropout") < 1:
        raise UserError(f"{where}: dropout must be in [0, 1), got {v.dropout}")
    if v.bn_momentum is not None and not 0 < _typed(v.bn_momentum, float, where, "bn_momentum") < 1:
        raise UserError(f"{where}: bn_momentum must be in (0, 1), got {v.bn_momentum}")
    get_backbone(v.backbone)
    if v.model_file is not None:
        _typed(v.model_file, str, where, "model_file")
    _typed(v.trust_model_code, bool, where, "trust_model_code")
    if not (v.model_file and v.preprocessing == "auto"):
        get_preprocessing(v.preprocessing)
    if v.image_size is not None and _typed(v.image_size, int, where, "image_size") < MIN_IMAGE_SIZE:
        raise UserError(f"{where}: image_size {v.image_size} is below EfficientNet's minimum "
                        f"of {MIN_IMAGE_SIZE}")
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
    if not 0 < data.val_fraction < 1:
        raise UserError(f"data: val_fraction must be in (0, 1), got {data.val_fraction}")
    if data.interpolation not in INTERPOLATIONS:
        raise unknown_name("interpolation", data.interpolation, INTERPOLATIONS, "data")
    for key in ("n_train_per_class", "n_test_per_class"):
        if getattr(synthetic, key) < 2:
            raise UserError(f"data.synthetic: {key} must be at least 2")
    if synthetic.image_size < MIN_IMAGE_SIZE:
        raise UserError(f"data.synthetic: image_size must be at least {MIN_IMAGE_SIZE}")
    return data


def _evaluation(table: dict) -> EvaluationConfig:
    ev = _build(EvaluationConfig, table, "evaluation")
    if _typed(ev.bootstrap_resamples, int, "evaluation", "bootstrap_resamples") < 1:
        raise UserError("evaluation: bootstrap_resamples must be a positive integer")
    if ev.target_sensitivity is not None and not 0 < _typed(
            ev.target_sensitivity, float, "evaluation", "target_sensitivity") <= 1:
        raise UserError("evaluation: target_sensitivity must be in (0, 1]")
    if not 0 <= _typed(ev.audit_max_distance, int, "evaluation", "audit_max_distance") < 256:
        raise UserError("evaluation: audit_max_distance must be in [0, 256)")
    _typed(ev.tta, bool, "evaluation", "tta")
    _typed(ev.audit, bool, "evaluation", "audit")
    if ev.target_sensitivity is not None:
        ev = dataclasses.replace(ev, target_sensitivity=float(ev.target_sensitivity))
    return ev


def from_dict(raw: dict, source: str = "") -> RunConfig:
    """Build and validate a RunConfig from a parsed TOML/YAML mapping."""
    raw = dict(raw)
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
    seed = _typed(raw.pop("seed", 42), int, "config", "seed")
    tune = parse_tune(raw.pop("tune", None), names, seed)
    return RunConfig(name=str(raw.pop("name", Path(source).stem or "run")), variants=rows,
                     seed=seed, data=data, evaluation=evaluation, tune=tune, source=source)


def select_variants(cfg: RunConfig, names: list[str] | None) -> RunConfig:
    """Keep only the named variants (in the given order); unknown names list the known."""
    if not names:
        return cfg
    known = {v.name: v for v in cfg.variants}
    for name in names:
        if name not in known:
            raise unknown_name("variant", name, known)
    return dataclasses.replace(cfg, variants=tuple(known[n] for n in dict.fromkeys(names)))


def load(path: str | Path) -> RunConfig:
    """Read a .toml, .yaml or .yml config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read config {path}: {getattr(error, 'strerror', None) or error}"
                        ) from None
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            raw = _load_yaml(text)
        else:
            raise UserError(f"config {path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise UserError(f"config {path} is not valid: {str(error).splitlines()[0]}") from None
    except Exception as error:  # yaml.YAMLError without importing yaml at module level
        raise UserError(f"config {path} is not valid: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a mapping at the top level")
    return from_dict(raw, source=str(path))


def _load_yaml(text: str):
    """yaml.safe_load, except that ``1e-4`` is a float as in YAML 1.2 and TOML (PyYAML's
    YAML 1.1 rules read an exponent without a dot as a string)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
