"""Saved models: ``.keras`` file + JSON sidecar, found again by the variant's config hash.

The sidecar holds what evaluation needs without guessing (variant, class names, image
size, preprocessing and its featurewise mean, config hash, versions). Both files are
written atomically: a killed run leaves no half-written model behind.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from melanoma.util import atomic
from melanoma.data.layout import CLASS_NAMES


@dataclass(frozen=True)
class SavedModel:
    """Paths of a stored model and its sidecar metadata."""

    model_path: Path
    sidecar: dict


def model_path(models_dir: Path, variant_name: str, key: str) -> Path:
    """``models/<variant>-<key>.keras``; the key alone decides a cache hit."""
    return Path(models_dir) / f"{variant_name}-{key}.keras"


CHECKPOINT_FILE = "state.npz"  # per-epoch training state inside a checkpoint folder


def checkpoint_dir(models_dir: Path, variant_name: str, key: str) -> Path:
    """``models/<variant>-<key>.partial/``: per-epoch state of an unfinished training."""
    return Path(models_dir) / f"{variant_name}-{key}.partial"


def find(models_dir: Path, key: str) -> SavedModel | None:
    """A saved model with this config key (any variant name), if one is complete on disk."""
    for sidecar_path in sorted(Path(models_dir).glob(f"*-{key}.json")):
        path = sidecar_path.with_suffix(".keras")
        if path.is_file():
            return SavedModel(path, json.loads(sidecar_path.read_text()))
    return None


def save(model, models_dir: Path, variant_name: str, key: str, sidecar: dict) -> SavedModel:
    """Write the model then its sidecar (the sidecar last: its presence marks completion)."""
    path = model_path(models_dir, variant_name, key)
    with atomic.replacing(path) as tmp:
        model.save(tmp)
    meta = {"class_names": list(CLASS_NAMES), "config_key": key, **sidecar}
    atomic.write_json(path.with_suffix(".json"), meta)
    return SavedModel(path, meta)


def load(saved: SavedModel):
    """Load a project-made ``.keras`` model (safe mode: no code from the file runs)."""
    import keras

    return keras.saving.load_model(saved.model_path, compile=False, safe_mode=True)
