"""Variants that are one model (e.g. ``featurewise`` and ``random_featurewise`` without
ImageNet weights): drawn once in the ROC and precision-recall figures, both names in the
legend, and named in a note on the page.

    groups = same_models(predictions)                  # {"a": ["a", "b"]}
    text = group_label(groups["a"], provenance.get("model_keys"))
"""
from __future__ import annotations

import pandas as pd

COLUMNS = ("seed", "file", "label", "prob_malignant")


def same_models(predictions: pd.DataFrame) -> dict[str, list[str]]:
    """First variant -> every variant with exactly the same predictions (the same files,
    labels and probabilities, seed by seed), in order of appearance; groups of two or more."""
    groups: dict[tuple, list[str]] = {}
    if "seed" not in predictions.columns:
        predictions = predictions.assign(seed=0)
    for name, group in predictions.groupby("variant", sort=False):
        ordered = group.sort_values(["seed", "file"], kind="mergesort")
        key = tuple(tuple(ordered[c].tolist()) for c in COLUMNS)
        groups.setdefault(key, []).append(name)
    return {names[0]: names for names in groups.values() if len(names) > 1}


def group_label(names: list[str], model_keys: dict | None = None) -> str:
    """``a = b (same model)`` when the run recorded one model key for all of them, else
    ``a = b (identical predictions)``."""
    keys = [(model_keys or {}).get(n) for n in names]
    same = keys[0] is not None and all(k == keys[0] for k in keys)
    return " = ".join(names) + (" (same model)" if same else " (identical predictions)")


def notes(groups: dict[str, list[str]], model_keys: dict | None = None) -> list[str]:
    """One sentence per group, for the page's introduction."""
    return [f"{group_label(names, model_keys)}: one curve in the ROC and precision-recall "
            f"figures; every table keeps a row per name." for names in groups.values()]
