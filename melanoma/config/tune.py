"""The ``[tune]`` table of a config: search algorithm, budget, search ranges, GPU switches.

    [tune]
    variant = "efficient_net_b0_samplewise"   # the row whose backbone/data/augmentation is tuned
    algorithm = "random"                      # random | bayesian | hyperband
    max_trials = 10                           # random/bayesian budget
    epochs = 3                                # per trial (hyperband: max_epochs)
    [tune.head_units]    min = 32, max = 512, step = 32
    [tune.learning_rate] min = 1e-5, max = 1e-2, sampling = "log"

Also here: ``load_tuned_head`` reads the best-hyperparameters JSON written by
``melanoma-bench tune`` for a variant's ``head = "tuned:PATH"``. No Keras import.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from melanoma.util.errors import UserError, unknown_name
from melanoma.util.names import check_safe_name

ALGORITHMS = ("random", "bayesian", "hyperband")
TUNED_PREFIX = "tuned:"
HEAD_KEYS = ("head_units", "dropout", "learning_rate", "freeze_backbone")


@dataclass(frozen=True)
class Range:
    """A numeric search range; ``default`` None -> the base variant's value (or ``min``)."""

    min: float
    max: float
    step: float | None = None
    sampling: str = "linear"  # linear | log
    default: float | None = None


@dataclass(frozen=True)
class TuneConfig:
    """What ``melanoma-bench tune`` searches, how, and on what hardware switches."""

    variant: str | None = None  # base row (default: the first variant)
    algorithm: str = "random"
    max_trials: int = 10
    epochs: int = 3
    hyperband_factor: int = 3
    hyperband_iterations: int = 1
    seed: int | None = None  # None -> the config's seed
    project: str = "head"  # keras-tuner project_name (folder under --out)
    head_units: Range = field(default_factory=lambda: Range(32, 512, 32))
    dropout: Range = field(default_factory=lambda: Range(0.0, 0.5, 0.1))
    learning_rate: Range = field(default_factory=lambda: Range(1e-5, 1e-2, None, "log"))
    tune_freeze_backbone: bool = False  # also search frozen vs fine-tuned backbone
    mixed_precision: bool = False  # mixed_float16 (GPU); the output Dense stays float32
    jit_compile: bool | str = "auto"  # XLA: true | false | "auto" (Keras decides)

    def digest(self) -> dict:
        """What must match for a rerun to resume the same search."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("mixed_precision", "jit_compile")}


def _unknown(table: dict, cls, where: str) -> None:
    known = sorted(f.name for f in fields(cls))
    for key in table:
        if key not in known:
            raise unknown_name("key", key, known, where)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {value!r}")
    return value


def _range(table, where: str, integer: bool, low: float, high: float | None) -> Range:
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table like {{min = ..., max = ...}}")
    _unknown(table, Range, where)
    if "min" not in table or "max" not in table:
        raise UserError(f"{where} needs both min and max")
    r = Range(**table)
    lo, hi = _number(r.min, f"{where}.min"), _number(r.max, f"{where}.max")
    if integer and (int(lo) != lo or int(hi) != hi):
        raise UserError(f"{where}: min and max must be integers, got {lo} and {hi}")
    if lo > hi:
        raise UserError(f"{where}: inverted range (min {lo} > max {hi})")
    if lo == hi:
        raise UserError(f"{where}: empty range (min == max == {lo}); widen it or set the value "
                        f"on the variant instead")
    if lo < low or (high is not None and hi >= high):
        upper = f", below {high}" if high is not None else ""
        raise UserError(f"{where}: values must be at least {low}{upper}, got [{lo}, {hi}]")
    if r.sampling not in ("linear", "log"):
        raise UserError(f"{where}: sampling must be \"linear\" or \"log\", got {r.sampling!r}")
    if r.sampling == "log" and lo <= 0:
        raise UserError(f"{where}: log sampling needs min > 0, got {lo}")
    if r.step is not None and not 0 < _number(r.step, f"{where}.step") <= hi - lo:
        raise UserError(f"{where}: step must be in (0, max - min], got {r.step}")
    if r.default is not None and not lo <= _number(r.default, f"{where}.default") <= hi:
        raise UserError(f"{where}: default {r.default} is outside [{lo}, {hi}]")
    return r


def parse_tune(table, variant_names: list[str], seed: int) -> TuneConfig | None:
    """Build and validate the ``[tune]`` table (None when the config has none)."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UserError("tune must be a table")
    table = dict(table)
    _unknown(table, TuneConfig, "tune")
    ranges = {"head_units": (True, 1, None), "dropout": (False, 0.0, 1.0),
              "learning_rate": (False, 1e-12, None)}
    for key, (integer, low, high) in ranges.items():
        if key in table:
            table[key] = _range(table[key], f"tune.{key}", integer, low, high)
    tune = TuneConfig(**table)
    if tune.algorithm not in ALGORITHMS:
        raise unknown_name("algorithm", tune.algorithm, ALGORITHMS, "tune")
    for key in ("max_trials", "epochs", "hyperband_iterations"):
        value = getattr(tune, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"tune: {key} must be a positive integer, got {value!r}")
    if isinstance(tune.hyperband_factor, bool) or not isinstance(tune.hyperband_factor, int) \
            or tune.hyperband_factor < 2:
        raise UserError(f"tune: hyperband_factor must be an integer >= 2, got "
                        f"{tune.hyperband_factor!r}")
    if tune.algorithm == "hyperband" and tune.epochs < 2:
        raise UserError("tune: hyperband needs epochs (its max_epochs) of at least 2")
    if tune.jit_compile not in (True, False, "auto"):
        raise UserError(f"tune: jit_compile must be true, false or \"auto\", got "
                        f"{tune.jit_compile!r}")
    for key in ("mixed_precision", "tune_freeze_backbone"):
        if not isinstance(getattr(tune, key), bool):
            raise UserError(f"tune: {key} must be true or false")
    if tune.variant is not None and tune.variant not in variant_names:
        raise unknown_name("variant", tune.variant, variant_names, "tune")
    check_safe_name(tune.project, "tune: project")
    return dataclasses.replace(tune, seed=seed if tune.seed is None else tune.seed)


def load_tuned_head(head: str, base_dir: Path | None = None) -> dict:
    """``"tuned:PATH"`` -> {head_units, dropout, learning_rate[, freeze_backbone]} from the
    best-hyperparameters JSON written by ``melanoma-bench tune``.

    A relative PATH is looked up in the current folder, then beside the config file.
    """
    if not isinstance(head, str) or not head.startswith(TUNED_PREFIX):
        raise UserError(f"head must be \"{TUNED_PREFIX}PATH\" (a best_hyperparameters.json "
                        f"written by melanoma-bench tune), got {head!r}")
    path = Path(head[len(TUNED_PREFIX):]).expanduser()
    if not path.is_absolute() and not path.is_file() and base_dir is not None:
        path = Path(base_dir) / path
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"head {head!r}: cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise UserError(f"head {head!r}: {path} is not valid JSON ({error})") from None
    values = raw.get("hyperparameters") if isinstance(raw, dict) else None
    if not isinstance(values, dict) or not {"head_units", "dropout", "learning_rate"} <= set(values):
        raise UserError(f"head {head!r}: {path} has no hyperparameters with head_units, dropout "
                        f"and learning_rate (is it a best_hyperparameters.json?)")
    return {k: values[k] for k in HEAD_KEYS if k in values}
