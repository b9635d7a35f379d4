"""Regression check: a run's training seeds against a committed seed baseline, judged by the
seed-calibrated gate of :mod:`melanoma.evaluation.gate`.

    melanoma-bench bench                          # run bench.toml's seeds, compare
    melanoma-bench bench --update-baseline        # write benchmarks/baselines/bench.json
    melanoma-bench bench --set defaults.learning_rate=1e-6    # a changed setting, same baseline

The baseline stores, per variant, every gated metric of each of at least
``gate.MIN_BASELINE_SEEDS`` seeds, the test set's counts and fingerprint, the training data's
fingerprint (``train_fingerprint``: train/ files, bytes and labels, from the run's
results.json), and where it came from (config hash and overrides, git commit, versions,
date). A metric is flagged only when the run's seeds are worse than the baseline's
seed-to-seed spread allows (one-sided Welch t-test, Holm over every checked pair:
family-wise false-alarm rate <= 5% when nothing changed). A different config (edited file
or ``--set``) or other training data (``--data-dir``) is reported, then still judged: that
is how a known-bad change is shown to be caught.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from melanoma.config.files import read_raw
from melanoma.evaluation import gate
from melanoma.util import atomic, provenance
from melanoma.util.errors import UserError

TRAIN_FIELD = "train_fingerprint"  # in the baseline, and in results.json's provenance.data


def config_hash(path: Path) -> str:
    """Hash of the config file as written (parsed, so comments and layout do not count;
    defaults added to the code later do not count either): a baseline fits one config."""
    raw = read_raw(Path(path))  # checked: a regular, small, valid file
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_train_fingerprint(results_path: Path) -> str | None:
    """The training-data fingerprint a run recorded (results.json: provenance.data.
    train_fingerprint), or None: no such file, or written before runs recorded it."""
    path = Path(results_path)
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    return ((results.get("provenance") or {}).get("data") or {}).get(TRAIN_FIELD)


def make_baseline(predictions: pd.DataFrame, config_path: Path, overrides=(),
                  extra: dict | None = None, train_fingerprint: str | None = None) -> dict:
    """The baseline document: the gate's per-seed values plus when, from which commit, config,
    overrides and training data it was made (a UserError with fewer than the minimum seeds)."""
    return {"config": Path(config_path).name, "config_hash": config_hash(config_path),
            "overrides": list(overrides), TRAIN_FIELD: train_fingerprint,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": provenance.git_commit(), "versions": provenance.package_versions(),
            **gate.seed_baseline(predictions), **(extra or {})}


def write_baseline(path: Path, baseline: dict) -> None:
    atomic.write_json(path, baseline)


def read_baseline(path: Path) -> dict:
    """The baseline in ``path``, checked field by field (``gate.validate_baseline``): a
    damaged, empty or mistyped file is a one-line UserError naming it and the field."""
    try:
        if not stat.S_ISREG(Path(path).stat().st_mode):
            raise UserError(f"{path}: not a regular file")
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a seed baseline (not UTF-8 text)") from None
    except OSError as error:
        raise UserError(f"cannot read the baseline {path}: {error.strerror or error}") from None
    try:
        baseline = json.loads(text)
    except ValueError as error:
        raise UserError(f"{path}: not valid JSON ({error}); make the baseline again with "
                        f"--update-baseline") from None
    return gate.validate_baseline(baseline, str(path))


def config_mismatch(baseline: dict, config_path: Path, overrides=()) -> str | None:
    """A sentence when the run's config is not the baseline's (another file content, or other
    ``--set`` overrides): the gate still judges, but a difference may then be intended."""
    now = config_hash(config_path)
    parts = []
    if baseline.get("config_hash") != now:
        parts.append(f"{Path(config_path).name} hashes to {now}, the baseline's config to "
                     f"{baseline.get('config_hash')}")
    if list(overrides) != list(baseline.get("overrides", [])):
        parts.append(f"this run sets {list(overrides) or 'nothing'}, the baseline "
                     f"{baseline.get('overrides', []) or 'nothing'}")
    if not parts:
        return None
    return ("the config differs from the baseline's (" + "; ".join(parts) + "); judged against "
            "it anyway (refresh it with --update-baseline if the change is intended)")


def training_note(baseline: dict, train_fingerprint: str | None) -> str | None:
    """A sentence when the run's training data are not (known to be) the baseline's; None
    when both fingerprints are recorded and equal. The gate still judges either way."""
    if TRAIN_FIELD not in baseline:
        return "baseline has no training-data fingerprint (made before this check)"
    recorded = baseline[TRAIN_FIELD]
    if recorded is None:
        return "baseline has no training-data fingerprint (its run's results.json had none)"
    if train_fingerprint is None:
        return ("this run's training-data fingerprint is unknown (no results.json with "
                "data.train_fingerprint beside the predictions): training data not compared")
    if train_fingerprint == recorded:
        return None
    return (f"the training data differ from the baseline's (train/ files, bytes or labels: "
            f"fingerprint {train_fingerprint}, the baseline's {recorded}); judged against it "
            f"anyway (refresh it with --update-baseline if the change is intended)")


@dataclass(frozen=True)
class Outcome:
    """What ``bench`` found: the gate's checks, and notes (a config or training-data
    mismatch) printed above its table."""

    gate: gate.GateOutcome
    mismatch: str | None
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def checks(self) -> list[gate.GateCheck]:
        return self.gate.checks

    def report(self) -> str:
        notes = "".join(f"NOTE: {n}\n" for n in (self.mismatch, *self.notes) if n)
        return notes + ("\n" if notes else "") + self.gate.report()


def check_predictions(predictions: pd.DataFrame, baseline: dict,
                      config_path: Path | None = None, overrides=(),
                      train_fingerprint: str | None = None) -> Outcome:
    """Judge saved predictions (one or more seeds; a ``seed`` column) against a seed
    baseline; no model needed. ``train_fingerprint``: what the run's results.json recorded
    (``run_train_fingerprint``); compared with the baseline's, a difference is a note."""
    mismatch = None if config_path is None else config_mismatch(baseline, config_path,
                                                                overrides)
    note = training_note(baseline, train_fingerprint)
    return Outcome(gate.check(baseline, predictions), mismatch, (note,) if note else ())
