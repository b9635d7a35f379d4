"""Benchmark configuration: a TOML or YAML file -> frozen dataclasses, validated.

A config has top-level ``name`` and ``seed``, a ``[data]`` table (optionally
``[data.synthetic]`` for the generated default set), a ``[defaults]`` table applied to every
variant, and a ``[[variants]]`` list. Unknown keys and invalid values are user errors with
one clear line (and a "did you mean" for typos).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .augmentation import Augmentation
from .backbones import MIN_IMAGE_SIZE, get_backbone
from .errors import UserError
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
        spec = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "note", "head")}
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
class RunConfig:
    """A whole benchmark: data, seed and the variants (rows) to train or load."""

    name: str
    variants: tuple[VariantConfig, ...]
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    tune: TuneConfig | None = None  # the [tune] table (melanoma-bench tune)
    source: str = ""  # the file it was read from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_keys(table: dict, cls, where: str) -> None:
    known = {f.name for f in fields(cls)} - {"source"}
    for key in table:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UserError(f"{where}: unknown key {key!r}{did_you_mean}; "
                            f"known: {', '.join(sorted(known))}")


def _build(cls, table: dict, where: str):
    _check_keys(table, cls, where)
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
    merged["augmentation"] = _build(Augmentation, aug, f"{where} augmentation")
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
    get_preprocessing(v.preprocessing)
    if v.image_size is not None and _typed(v.image_size, int, where, "image_size") < MIN_IMAGE_SIZE:
        raise UserError(f"{where}: image_size {v.image_size} is below EfficientNet's minimum "
                        f"of {MIN_IMAGE_SIZE}")
    aug = v.augmentation
    if aug.rotation_deg < 0 or not 0 <= aug.shear_deg < 90:
        raise UserError(f"{where}: augmentation rotation_deg must be >= 0 and shear_deg in [0, 90)")


def _data(table: dict) -> DataConfig:
    synthetic = _build(SyntheticSpec, table.pop("synthetic", {}) or {}, "data.synthetic")
    data = _build(DataConfig, {**table, "synthetic": synthetic}, "data")
    if not 0 < data.val_fraction < 1:
        raise UserError(f"data: val_fraction must be in (0, 1), got {data.val_fraction}")
    if data.interpolation not in INTERPOLATIONS:
        raise UserError(f"data: unknown interpolation {data.interpolation!r}; "
                        f"known: {', '.join(INTERPOLATIONS)}")
    for key in ("n_train_per_class", "n_test_per_class"):
        if getattr(synthetic, key) < 2:
            raise UserError(f"data.synthetic: {key} must be at least 2")
    if synthetic.image_size < MIN_IMAGE_SIZE:
        raise UserError(f"data.synthetic: image_size must be at least {MIN_IMAGE_SIZE}")
    return data


def from_dict(raw: dict, source: str = "") -> RunConfig:
    """Build and validate a RunConfig from a parsed TOML/YAML mapping."""
    raw = dict(raw)
    _check_keys({k: v for k, v in raw.items() if k != "defaults"}, RunConfig, "config")
    defaults = raw.pop("defaults", {}) or {}
    variants = raw.pop("variants", None)
    if not variants or not isinstance(variants, list):
        raise UserError("config: no [[variants]] listed")
    base_dir = Path(source).parent if source else None
    rows = tuple(_variant(dict(v), dict(defaults), i, base_dir) for i, v in enumerate(variants))
    names = [v.name for v in rows]
    if len(set(names)) != len(names):
        raise UserError(f"config: variant names must be unique, got {names}")
    data = _data(dict(raw.pop("data", {}) or {}))
    seed = _typed(raw.pop("seed", 42), int, "config", "seed")
    tune = parse_tune(raw.pop("tune", None), names, seed)
    return RunConfig(name=str(raw.pop("name", Path(source).stem or "run")), variants=rows,
                     seed=seed, data=data, tune=tune, source=source)


def select_variants(cfg: RunConfig, names: list[str] | None) -> RunConfig:
    """Keep only the named variants (in the given order); unknown names list the known."""
    if not names:
        return cfg
    known = {v.name: v for v in cfg.variants}
    for name in names:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UserError(f"unknown variant {name!r}{did_you_mean}; this config has: "
                            f"{', '.join(known)}")
    return dataclasses.replace(cfg, variants=tuple(known[n] for n in dict.fromkeys(names)))


def load(path: str | Path) -> RunConfig:
    """Read a .toml, .yaml or .yml config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read config {path}: {error.strerror or error}") from None
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise UserError(f"config {path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise UserError(f"config {path} is not valid: {str(error).splitlines()[0]}") from None
    except Exception as error:  # yaml.YAMLError without importing yaml at module level
        raise UserError(f"config {path} is not valid: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a mapping at the top level")
    return from_dict(raw, source=str(path))
