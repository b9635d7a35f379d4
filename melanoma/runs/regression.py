"""Regression check: compare a run's metrics with a committed baseline, with tolerances
taken from the baseline run's own bootstrap intervals.

    melanoma-bench bench                       # run benchmarks/configs/bench.toml, compare
    melanoma-bench bench --update-baseline     # write benchmarks/baselines/bench.json

Tolerance method (documented in the README): for every metric the baseline stores its
value and its stratified 95% bootstrap interval (1000 resamples, fixed seed) on the
baseline's own test predictions. A metric regresses when the current value lies beyond
that interval on the worse side: allowed drop = value - CI low for higher-is-better
metrics, CI high - value for lower-is-better ones (Brier, ECE), times ``TOLERANCE_SCALE``
(1.0). Improvements never fail. Counts (n, n_pos, n_neg) must match exactly: a different
test set is not comparable. Differences inside the interval are what resampling the test
set alone would produce, so flagging them would flag noise.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from melanoma.evaluation import metric_table, metrics
from melanoma.evaluation.metric_table import is_finite
from melanoma.util import atomic, provenance

N_RESAMPLES = 1000
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0
TOLERANCE_SCALE = 1.0
LOWER_IS_BETTER = metric_table.LOWER_IS_BETTER
EXACT = frozenset(metric_table.COUNTS)
METHOD = (f"allowed drop = {TOLERANCE_SCALE:g} x the distance from the baseline value to the "
          f"worse end of its stratified {CI_LEVEL:.0%} bootstrap interval ({N_RESAMPLES} "
          f"resamples, seed {BOOTSTRAP_SEED}); counts must match exactly; improvements pass")


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


def variant_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, dict[str, float]]:
    """{metric: {"value", "ci_low", "ci_high"}} for every metric of ``metrics.METRIC_NAMES``."""
    values = metrics.binary_metrics(y, p)
    intervals = metrics.bootstrap_ci(y, p, n_resamples=N_RESAMPLES, alpha=1 - CI_LEVEL,
                                     seed=BOOTSTRAP_SEED)
    out = {}
    for name in metrics.METRIC_NAMES:
        low, high = intervals.get(name, (values[name], values[name]))
        if name in EXACT:
            low = high = values[name]
        out[name] = {"value": values[name], "ci_low": low, "ci_high": high}
    return out


def summarise(predictions: pd.DataFrame) -> dict[str, dict]:
    """Per variant (in order of appearance): metrics with intervals, from predictions.csv rows."""
    return {name: variant_metrics(group["label"].to_numpy(), group["prob_malignant"].to_numpy())
            for name, group in predictions.groupby("variant", sort=False)}


def make_baseline(predictions: pd.DataFrame, config_path: Path, extra: dict | None = None) -> dict:
    """The baseline document: metrics per variant plus when, from which commit and how."""
    return {"config": Path(config_path).name, "config_hash": config_hash(config_path),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": provenance.git_commit(), "versions": provenance.package_versions(),
            "tolerance_method": METHOD, "variants": summarise(predictions), **(extra or {})}


def write_baseline(path: Path, baseline: dict) -> None:
    atomic.write_json(path, baseline)


def read_baseline(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Check:
    """One line of the comparison table."""

    variant: str
    metric: str
    baseline: float | None
    current: float | None
    allowed: float | None
    verdict: str  # "ok", "improved", "REGRESSED", "MISSING", "CHANGED"

    @property
    def failed(self) -> bool:
        return self.verdict in ("REGRESSED", "MISSING", "CHANGED")

    @property
    def difference(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def allowed_drop(metric: str, entry: dict) -> float:
    """How far ``metric`` may move the worse way from the baseline value (>= 0)."""
    value, low, high = entry["value"], entry.get("ci_low"), entry.get("ci_high")
    if metric in EXACT or not (is_finite(low) and is_finite(high)):
        return 0.0
    room = (high - value) if metric in LOWER_IS_BETTER else (value - low)
    return TOLERANCE_SCALE * max(room, 0.0)


def check_metric(variant: str, metric: str, entry: dict, current: float | None) -> Check:
    """Verdict for one metric against its baseline entry."""
    base = entry.get("value")
    allowed = allowed_drop(metric, entry)
    if not is_finite(base):  # undefined in the baseline (e.g. one class): nothing to hold
        verdict = "ok" if not is_finite(current) else "improved"
        return Check(variant, metric, base, current, None, verdict)
    if not is_finite(current):
        return Check(variant, metric, base, current, allowed, "MISSING")
    if metric in EXACT:
        return Check(variant, metric, base, current, 0.0, "ok" if current == base else "CHANGED")
    worse_by = (current - base) if metric in LOWER_IS_BETTER else (base - current)
    eps = 1e-12
    if worse_by > allowed + eps:
        verdict = "REGRESSED"
    elif -worse_by > allowed + eps:
        verdict = "improved"
    else:
        verdict = "ok"
    return Check(variant, metric, base, current, allowed, verdict)


def compare(baseline: dict, current: dict[str, dict]) -> list[Check]:
    """Every metric of every baseline variant, checked against ``current`` (from summarise)."""
    checks = []
    for variant, entries in baseline["variants"].items():
        now = current.get(variant)
        for metric, entry in entries.items():
            value = None if now is None or metric not in now else now[metric]["value"]
            checks.append(check_metric(variant, metric, entry, value))
    return checks


def table(checks: list[Check], only_failed: bool = False) -> str:
    """The readable table: metric, baseline, current, difference, allowed drop, verdict."""
    shown = [c for c in checks if c.failed] if only_failed else checks

    def num(x, signed=False):
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "-"
        return f"{x:+.4f}" if signed else f"{x:.4f}"

    rows = [[c.variant, c.metric, num(c.baseline), num(c.current), num(c.difference, True),
             "exact" if c.metric in EXACT else num(c.allowed), c.verdict] for c in shown]
    return tabulate(rows, headers=["variant", "metric", "baseline", "current", "difference",
                                   "allowed drop", "verdict"], tablefmt="github",
                    disable_numparse=True)


def config_mismatch(baseline: dict, config_path: Path) -> str | None:
    """A sentence when the baseline was made from another config (the numbers then differ
    for a reason that is not a regression)."""
    now = config_hash(config_path)
    if baseline.get("config_hash") == now:
        return None
    return (f"the baseline was made from a different config (hash {baseline.get('config_hash')}"
            f", {Path(config_path).name} now hashes to {now}); if the change is intended, "
            f"refresh it with --update-baseline")


@dataclass(frozen=True)
class Outcome:
    """What ``bench`` found: the checks, a config mismatch if any, and the table text."""

    checks: list[Check]
    mismatch: str | None

    @property
    def passed(self) -> bool:
        return self.mismatch is None and not any(c.failed for c in self.checks)

    def report(self) -> str:
        failed = [c for c in self.checks if c.failed]
        lines = [table(self.checks), ""]
        if self.mismatch:
            lines.append(f"FAIL: {self.mismatch}")
        if failed:
            lines += [f"FAIL: {len(failed)} of {len(self.checks)} checks regressed:", "",
                      table(failed)]
        if self.passed:
            improved = sum(c.verdict == "improved" for c in self.checks)
            lines.append(f"PASS: {len(self.checks)} checks within tolerance"
                         + (f" ({improved} improved beyond it)" if improved else ""))
        lines.append(f"tolerance: {METHOD}")
        return "\n".join(lines)


def check_predictions(predictions: pd.DataFrame, baseline: dict,
                      config_path: Path | None = None) -> Outcome:
    """Compare saved predictions (predictions.csv) with a baseline; no model needed."""
    mismatch = None if config_path is None else config_mismatch(baseline, config_path)
    return Outcome(compare(baseline, summarise(predictions)), mismatch)
