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
from dataclasses import dataclass, field
from pathlib import Path

from melanoma.config.checks import jit_compile_check
from melanoma.config.schema import _build, _check_keys, _checked, _table, one_of
from melanoma.util.errors import UserError, unknown_name
from melanoma.util.names import check_safe_name

ALGORITHMS = ("random", "bayesian", "hyperband")
TUNED_PREFIX = "tuned:"
HEAD_KEYS = ("head_units", "dropout", "learning_rate", "freeze_backbone")


def number(value):
    """A check: an int or a float (not a bool)."""
    return None if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else "must be a number"


def optional_number(value):
    return None if value is None else number(value)


def integer_at_least(low: int):
    """A check: an integer >= ``low`` (not a bool)."""
    text = "must be a positive integer" if low == 1 else f"must be an integer >= {low}"

    def check(value):
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= low \
            else text
    return check


@dataclass(frozen=True)
class Range:
    """A numeric search range; ``default`` None -> the base variant's value (or ``min``).
    ``min``/``max`` keep the type written (an int range stays int)."""

    min: int | float = _checked(None, number)
    max: int | float = _checked(None, number)
    step: int | float | None = _checked(None, optional_number)
    sampling: str = _checked("linear", one_of(("linear", "log")))
    default: int | float | None = _checked(None, optional_number)


@dataclass(frozen=True)
class TuneConfig:
    """What ``melanoma-bench tune`` searches, how, and on what hardware switches."""

    variant: str | None = None  # base row (default: the first variant)
    algorithm: str = "random"  # one of ALGORITHMS (checked with a "did you mean")
    max_trials: int = _checked(10, integer_at_least(1), "must be a positive integer")
    epochs: int = _checked(3, integer_at_least(1), "must be a positive integer")
    hyperband_factor: int = _checked(3, integer_at_least(2), "must be an integer >= 2")
    hyperband_iterations: int = _checked(1, integer_at_least(1), "must be a positive integer")
    seed: int | None = None  # None -> the config's seed
    project: str = "head"  # keras-tuner project_name (folder under --out)
    head_units: Range = field(default_factory=lambda: Range(32, 512, 32))
    dropout: Range = field(default_factory=lambda: Range(0.0, 0.5, 0.1))
    learning_rate: Range = field(default_factory=lambda: Range(1e-5, 1e-2, None, "log"))
    tune_freeze_backbone: bool = _checked(False, None, "must be true or false")
    # mixed_float16 (GPU); the output Dense stays float32
    mixed_precision: bool = _checked(False, None, "must be true or false")
    jit_compile: bool | str = _checked("auto", jit_compile_check)  # XLA: true | false | "auto"

    def digest(self) -> dict:
        """What must match for a rerun to resume the same search."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("mixed_precision", "jit_compile")}


# the searched hyperparameters: (integer, lowest value, bound it must stay below or None)
RANGES = {"head_units": (True, 1, None), "dropout": (False, 0.0, 1.0),
          "learning_rate": (False, 1e-12, None)}


def _range(table, where: str, integer: bool, low: float, high: float | None) -> Range:
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table like {{min = ..., max = ...}}")
    if "min" not in table or "max" not in table:
        _check_keys(table, Range, where)
        raise UserError(f"{where} needs both min and max")
    r = _build(Range, table, where)
    lo, hi = r.min, r.max
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
    if r.sampling == "log" and lo <= 0:
        raise UserError(f"{where}: log sampling needs min > 0, got {lo}")
    if r.step is not None and not 0 < r.step <= hi - lo:
        raise UserError(f"{where}: step must be in (0, max - min], got {r.step}")
    if r.default is not None and not lo <= r.default <= hi:
        raise UserError(f"{where}: default {r.default} is outside [{lo}, {hi}]")
    return r


def parse_tune(table, variant_names: list[str], seed: int) -> TuneConfig | None:
    """Build and validate the ``[tune]`` table (None when the config has none): per-field
    rules in the declarations above, then the ones that look at other fields or tables."""
    if table is None:
        return None
    table = _table(table, "tune")
    _check_keys(table, TuneConfig, "tune")
    for key, (integer, low, high) in RANGES.items():
        if key in table:
            table[key] = _range(table[key], f"tune.{key}", integer, low, high)
    tune = _build(TuneConfig, table, "tune")
    if tune.algorithm not in ALGORITHMS:
        raise unknown_name("algorithm", tune.algorithm, ALGORITHMS, "tune")
    if tune.algorithm == "hyperband" and tune.epochs < 2:
        raise UserError("tune: hyperband needs epochs (its max_epochs) of at least 2")
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
