"""Regression check: a run's training seeds against a committed seed baseline, judged by the
seed-calibrated gate of :mod:`melanoma.evaluation.gate`.

    melanoma-bench bench                          # run bench.toml's seeds, compare
    melanoma-bench bench --update-baseline        # write benchmarks/baselines/bench.json
    melanoma-bench bench --set defaults.learning_rate=1e-6    # a changed setting, same baseline

The baseline stores, per variant, every gated metric of each of at least
``gate.MIN_BASELINE_SEEDS`` seeds, the test set's counts and fingerprint, and where it came
from (config hash and overrides, git commit, versions, date). A metric is flagged only when
the run's seeds are worse than the baseline's seed-to-seed spread allows (one-sided Welch
t-test, Holm over every checked pair: family-wise false-alarm rate <= 5% when nothing
changed). A different config (edited file or ``--set``) is reported, then still judged:
that is how a known-bad change is shown to be caught.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from melanoma.evaluation import gate
from melanoma.util import atomic, provenance


def config_hash(path: Path) -> str:
    """Hash of the config file as written (parsed, so comments and layout do not count;
    defaults added to the code later do not count either): a baseline fits one config."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        raw = tomllib.loads(text)
    else:
        import yaml

        raw = yaml.safe_load(text)
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_baseline(predictions: pd.DataFrame, config_path: Path, overrides=(),
                  extra: dict | None = None) -> dict:
    """The baseline document: the gate's per-seed values plus when, from which commit, config
    and overrides it was made (a UserError with fewer than the minimum seeds)."""
    return {"config": Path(config_path).name, "config_hash": config_hash(config_path),
            "overrides": list(overrides),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": provenance.git_commit(), "versions": provenance.package_versions(),
            **gate.seed_baseline(predictions), **(extra or {})}


def write_baseline(path: Path, baseline: dict) -> None:
    atomic.write_json(path, baseline)


def read_baseline(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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


@dataclass(frozen=True)
class Outcome:
    """What ``bench`` found: the gate's checks and a config mismatch, if any."""

    gate: gate.GateOutcome
    mismatch: str | None

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def checks(self) -> list[gate.GateCheck]:
        return self.gate.checks

    def report(self) -> str:
        note = f"NOTE: {self.mismatch}\n\n" if self.mismatch else ""
        return note + self.gate.report()


def check_predictions(predictions: pd.DataFrame, baseline: dict,
                      config_path: Path | None = None, overrides=()) -> Outcome:
    """Judge saved predictions (one or more seeds; a ``seed`` column) against a seed
    baseline; no model needed."""
    mismatch = None if config_path is None else config_mismatch(baseline, config_path,
                                                                overrides)
    return Outcome(gate.check(baseline, predictions), mismatch)
