"""A run's saved files read back for ``melanoma-bench report RUN_DIR``, each one checked.

    saved = load_run(Path("reports/default"))   # predictions, settings, specs, histories, ...

A damaged file (a NaN or empty cell, a label that is not 0/1, a missing column, a row
repeated, truncated or mistyped JSON) is a UserError naming the file, the line and the
problem, never a pandas or JSON traceback, and never a silently different table (a
repeated row would have inflated n).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.evaluation.rows import EvalSettings
from melanoma.util.errors import UserError
from melanoma.util.names import cell_read

PREDICTION_COLUMNS = ("variant", "seed", "file", "label", "prob_malignant")
REQUIRED_COLUMNS = ("variant", "file", "label", "prob_malignant")  # `seed` came later
SPEC_KEYS = ("backbone", "image_size", "weights", "preprocessing", "epochs", "learning_rate",
             "batch_size", "head_units", "augmentation", "spec", "note")
WHAT_TO_DO = "restore the file, or rerun the command that wrote it"


def damaged(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem} ({WHAT_TO_DO})")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV as text cells with every one of ``columns`` present and non-empty."""
    _regular(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        frame = frame.map(cell_read)  # undo csv_safe's quote before = + - @
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as error:
        raise damaged(path, f"not a readable CSV file ({_first_line(error)})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise damaged(path, f"no column {', '.join(missing)} (expected {','.join(columns)})")
    for column in columns:
        empty = np.flatnonzero(frame[column].str.strip() == "")
        if len(empty):
            raise damaged(path, f"line {empty[0] + 2}: empty {column}")
    return frame


def _regular(path: Path) -> None:
    """A saved file must be a regular file: a FIFO would block the report forever."""
    if Path(path).exists() and not Path(path).is_file():  # is_file: a stat, never an open
        raise damaged(Path(path), "not a regular file")


def _first_bad(path: Path, frame: pd.DataFrame, bad: np.ndarray, column: str, rule: str):
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise damaged(path, f"line {i + 2}: {column} {frame[column].iloc[i]!r} is not {rule}")


def read_predictions(path: Path, seed: int | None = None) -> pd.DataFrame:
    """predictions.csv (or val_predictions.csv): one row per (variant, seed, file), label 0/1,
    prob_malignant a finite probability. A file written before the ``seed`` column existed
    holds one training seed: ``seed``, else the provenance seed of the results.json beside it
    (else 0)."""
    frame = read_table(path, REQUIRED_COLUMNS)
    label = frame["label"].str.strip()
    _first_bad(path, frame, ~label.isin(["0", "1"]).to_numpy(), "label", "0 or 1")
    prob = pd.to_numeric(frame["prob_malignant"], errors="coerce").to_numpy(np.float64)
    _first_bad(path, frame, ~(np.isfinite(prob) & (prob >= 0) & (prob <= 1)), "prob_malignant",
               "a probability in [0, 1]")
    if "seed" in frame.columns:
        _first_bad(path, frame, ~frame["seed"].str.strip().str.fullmatch(r"\d+").to_numpy(),
                   "seed", "an integer >= 0")
        seeds = frame["seed"].astype(np.int64)
    else:
        if seed is None:
            beside = Path(path).parent / "results.json"
            saved = read_json(beside) if beside.is_file() else {}
            seed = (saved.get("provenance") or {}).get("seed", 0) or 0
        seeds = np.full(len(frame), int(seed), np.int64)
    frame = frame.assign(seed=seeds)
    again = frame.duplicated(["variant", "seed", "file"]).to_numpy()
    if again.any():
        row = frame.iloc[int(np.flatnonzero(again)[0])]
        same = ((frame["variant"] == row["variant"]) & (frame["file"] == row["file"])
                & (frame["seed"] == row["seed"])).to_numpy()
        first, second = np.flatnonzero(same)[:2] + 2
        raise damaged(path, f"lines {first} and {second}: variant {row['variant']!r} has file "
                            f"{row['file']!r} twice (each image is scored once per variant "
                            f"and seed)")
    frame = frame.assign(label=label.astype(np.int64), prob_malignant=prob)
    return frame.loc[:, list(PREDICTION_COLUMNS)].reset_index(drop=True)


def read_clean_list(path: Path) -> set[str] | None:
    """The clean test files of clean_test.csv (file,clean with clean 0/1); None without one."""
    if not Path(path).is_file():
        return None
    frame = read_table(path, ("file", "clean"))
    clean = frame["clean"].str.strip()
    _first_bad(path, frame, ~clean.isin(["0", "1"]).to_numpy(), "clean", "0 or 1")
    return set(frame.loc[clean == "1", "file"])


def read_json(path: Path, default=None, kind: type = dict):
    """A JSON file's content of type ``kind``; ``default`` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    _regular(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise damaged(path, f"unreadable ({_first_line(error)})") from None
    except ValueError as error:
        raise damaged(path, f"not valid JSON ({_first_line(error)})") from None
    if not isinstance(value, kind):
        raise damaged(path, f"not a JSON {'object' if kind is dict else kind.__name__} but "
                            f"{type(value).__name__}")
    return value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def settings_from(path: Path, saved: dict) -> EvalSettings:
    """results.json's "evaluation" as EvalSettings, each field checked."""
    given = saved.get("evaluation", {})
    names = {f.name for f in fields(EvalSettings)}
    target = given.get("target_sensitivity") if isinstance(given, dict) else None
    if not (isinstance(given, dict) and set(given) <= names
            and isinstance(given.get("seed", 0), int) and given.get("seed", 0) >= 0
            and isinstance(given.get("bootstrap_resamples", 1), int)
            and given.get("bootstrap_resamples", 1) > 0
            and (target is None or (_number(target) and 0 < target < 1))):
        raise damaged(path, f"evaluation {given!r} is not {{seed: int >= 0, "
                            f"bootstrap_resamples: int > 0, target_sensitivity: null or in (0, 1)}}")
    return EvalSettings(**given)


def specs_from(path: Path, saved: dict) -> dict[str, dict]:
    """Each variant's spec: results.json's "specs", or (an older run) its rows' spec columns."""
    specs, rows = saved.get("specs"), saved.get("rows", [])
    if specs is None:
        if not (isinstance(rows, list) and all(isinstance(r, dict) and "variant" in r
                                               for r in rows)):
            raise damaged(path, "rows is not a list of objects with a variant")
        specs = {r["variant"]: {k: v for k, v in r.items() if k in SPEC_KEYS} for r in rows}
    if not (isinstance(specs, dict) and all(isinstance(v, dict) for v in specs.values())):
        raise damaged(path, "specs is not an object of one object per variant")
    for key in ("provenance", "audit"):
        if saved.get(key) is not None and not isinstance(saved[key], dict):
            raise damaged(path, f"{key} is not an object")
    return specs


def read_histories(path: Path) -> dict[str, dict]:
    """histories.json: per variant, per metric, a list of numbers (null for NaN)."""
    histories = read_json(path, default={})
    for name, history in histories.items():
        if not (isinstance(history, dict) and all(
                isinstance(v, list) and all(x is None or _number(x) for x in v)
                for v in history.values())):
            raise damaged(path, f"the history of {name!r} is not an object of lists of numbers")
    return histories


@dataclass(frozen=True)
class SavedRun:
    """What ``report`` rebuilds a run's tables, figures and page from."""

    predictions: pd.DataFrame
    val_predictions: pd.DataFrame | None
    settings: EvalSettings
    specs: dict
    histories: dict
    provenance: dict
    clean_files: set[str] | None
    audit_summary: dict | None


def load_run(run_dir: Path) -> SavedRun:
    """Every saved input of a run folder, checked; UserError naming the first bad file."""
    run_dir = Path(run_dir)
    for name in ("predictions.csv", "results.json"):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir} has no {name}: not the output folder of "
                            f"`melanoma-bench run`")
    results = run_dir / "results.json"
    saved = read_json(results)
    val_path = run_dir / "val_predictions.csv"
    seed = (saved.get("provenance") or {}).get("seed", 0) or 0  # files without a seed column
    return SavedRun(
        predictions=read_predictions(run_dir / "predictions.csv", seed),
        val_predictions=read_predictions(val_path, seed) if val_path.is_file() else None,
        settings=settings_from(results, saved), specs=specs_from(results, saved),
        histories=read_histories(run_dir / "histories.json"),
        provenance=saved.get("provenance") or {},
        clean_files=read_clean_list(run_dir / "clean_test.csv"),
        audit_summary=read_json(run_dir / "audit_summary.json", default=saved.get("audit")))
