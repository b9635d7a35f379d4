"""Ensembles of saved variants: new prediction rows averaged from members', no retraining.

    extra = ensemble_predictions(predictions, ["b0_samplewise", "b0_native"], "geometric",
                                 name="ens_geo")
    predictions = pd.concat([predictions, extra], ignore_index=True)

The rows have the columns of predictions.csv (variant, file, label, prob_malignant), so the
ensemble is scored by the same code, with the same intervals, as any trained variant.
Apply it to the validation predictions too, so its threshold is chosen like the others'.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from melanoma.util.errors import UserError, unknown_name

log = logging.getLogger(__name__)

COLUMNS = ("variant", "file", "label", "prob_malignant")
METHODS = ("mean", "geometric")


def _combine(probabilities: np.ndarray, method: str) -> np.ndarray:
    """(n_members, n_files) -> (n_files,): arithmetic mean, or geometric mean of the malignant
    probabilities (exp of the mean log; 0 if any member says exactly 0)."""
    if method == "mean":
        return probabilities.mean(axis=0)
    with np.errstate(divide="ignore"):
        return np.exp(np.log(probabilities).mean(axis=0))


def _member_table(predictions: pd.DataFrame, member: str) -> pd.DataFrame:
    """One member's rows indexed by file; a UserError if a file appears twice."""
    rows = predictions.loc[predictions["variant"] == member, ["file", "label", "prob_malignant"]]
    if rows["file"].duplicated().any():
        duplicate = rows.loc[rows["file"].duplicated(), "file"].iloc[0]
        raise UserError(f"ensemble member {member!r} has several predictions for {duplicate!r}"
                        f" (one row per file is needed; several seeds?)")
    return rows.set_index("file")


def _check_members(predictions: pd.DataFrame, members, method: str, name: str) -> list[str]:
    missing = [c for c in COLUMNS if c not in predictions.columns]
    if missing:
        raise UserError(f"predictions lack the column(s) {', '.join(missing)}")
    members = [str(m) for m in members]
    if len(members) < 2 or len(set(members)) != len(members):
        raise UserError(f"ensemble {name!r} needs at least two distinct member variants, got "
                        f"{members}")
    if method not in METHODS:
        raise unknown_name("ensemble method", method, METHODS, where=f"ensemble {name!r}")
    known = list(dict.fromkeys(predictions["variant"]))
    for member in members:
        if member not in known:
            raise unknown_name("member variant", member, known, where=f"ensemble {name!r}")
    if name in known:
        raise UserError(f"ensemble name {name!r} is already a variant in the predictions")
    return members


def ensemble_predictions(predictions: pd.DataFrame, members, method: str = "mean",
                         name: str | None = None) -> pd.DataFrame:
    """Rows (variant=name, file, label, prob_malignant) combining ``members``' malignant
    probabilities per file by ``method`` ("mean" or "geometric"), in the first member's file
    order. Every member must have exactly the same files with the same labels."""
    name = name or f"ensemble_{method}(" + "+".join(map(str, members)) + ")"
    members = _check_members(predictions, members, method, name)
    tables = [_member_table(predictions, m) for m in members]
    first = tables[0]
    for member, table in zip(members[1:], tables[1:]):
        if set(table.index) != set(first.index):
            only = sorted(set(table.index) ^ set(first.index))
            raise UserError(f"ensemble {name!r}: {member!r} and {members[0]!r} have different "
                            f"test files ({len(only)} differ, e.g. {only[0]!r})")
        labels = table.loc[first.index, "label"].to_numpy()
        if not np.array_equal(labels, first["label"].to_numpy()):
            raise UserError(f"ensemble {name!r}: {member!r} and {members[0]!r} disagree on the "
                            f"label of {int(np.sum(labels != first['label'].to_numpy()))} file(s)")
    stacked = np.stack([t.loc[first.index, "prob_malignant"].to_numpy(np.float64)
                        for t in tables])
    if not np.all(np.isfinite(stacked)) or stacked.min() < 0 or stacked.max() > 1:
        raise UserError(f"ensemble {name!r}: member probabilities must lie in [0, 1]")
    log.info("ensemble %s = %s of %s over %d files", name, method, members, stacked.shape[1])
    return pd.DataFrame({"variant": name, "file": first.index.to_numpy(),
                         "label": first["label"].to_numpy(np.int64),
                         "prob_malignant": _combine(stacked, method)})


def add_ensembles(predictions: pd.DataFrame, ensembles: list[dict]) -> pd.DataFrame:
    """``predictions`` with one block of rows appended per ``[[ensembles]]`` entry
    (``{"name", "members", "method"}``, method defaulting to "mean"), in order."""
    blocks = [predictions]
    for entry in ensembles:
        unknown = sorted(set(entry) - {"name", "members", "method"})
        missing = [k for k in ("name", "members") if k not in entry]
        if unknown or missing:
            raise UserError(f"[[ensembles]] entry {entry!r}: keys are name, members and "
                            f"method; missing {missing}, unknown {unknown}")
        blocks.append(ensemble_predictions(pd.concat(blocks, ignore_index=True),
                                           entry["members"], entry.get("method", "mean"),
                                           entry["name"]))
    return pd.concat(blocks, ignore_index=True)


def _entry(entry) -> dict:
    """A config EnsembleConfig or a dict (results.json's config) as {name, members, method}."""
    if not isinstance(entry, dict):
        entry = {"name": entry.name, "members": entry.members, "method": entry.method}
    return {"name": entry["name"], "members": list(entry["members"]),
            "method": entry.get("method", "mean")}


def with_ensembles(predictions: pd.DataFrame | None, ensembles) -> pd.DataFrame | None:
    """``predictions`` (with a ``seed`` column) plus each ensemble's rows, seed by seed: the
    members trained with one seed make that seed's ensemble. An ensemble whose members are
    not all there (``run --variant`` picked others) is left out (logged)."""
    entries = [_entry(e) for e in ensembles or ()]
    if predictions is None or predictions.empty or not entries:
        return predictions
    blocks = [predictions]
    for seed, group in predictions.groupby("seed", sort=False):
        present, usable = set(group["variant"]), []
        for entry in entries:
            absent = [m for m in entry["members"] if m not in present]
            if absent:
                log.info("ensemble %s left out (seed %s): no predictions of %s",
                         entry["name"], seed, ", ".join(absent))
                continue
            usable.append(entry)
            present.add(entry["name"])
        combined = add_ensembles(group.drop(columns="seed"), usable)
        blocks.append(combined.iloc[len(group):].assign(seed=seed))
    return pd.concat(blocks, ignore_index=True).loc[:, list(predictions.columns)]


def describe(entry) -> str:
    """What an ensemble row did, for its preprocessing cell: ``mean of p(malignant) of a, b``."""
    entry = _entry(entry)
    how = "geometric mean" if entry["method"] == "geometric" else "mean"
    return f"ensemble: {how} of p(malignant) of {', '.join(entry['members'])} (no training)"
