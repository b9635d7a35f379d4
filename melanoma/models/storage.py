"""Saved models: ``.keras`` file + JSON sidecar, found again by the variant's config hash.

The sidecar (:mod:`melanoma.models.sidecars`) holds what evaluation needs without
guessing. Both files are written atomically: a killed run leaves no half-written model
behind. Both are checked when read back: a damaged or edited one is a one-line error naming the file and the way
out (``--retrain``, or delete it), never a Keras or JSON traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from melanoma.data.layout import CLASS_NAMES
from melanoma.models import sidecars
from melanoma.models.loading import read_config
from melanoma.util import atomic
from melanoma.util.errors import UserError, first_line
from melanoma.util.keys import digest


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


def find(models_dir: Path, key: str, expect: dict | None = None) -> SavedModel | None:
    """A saved model with this model key (any variant name), if one is complete on disk.
    Its sidecar must be intact, carry this key, hold the training recipe whose hash IS the
    key, and agree with ``expect`` (e.g. ``{"recipe": ...}``, the recipe this run would
    train): else a UserError saying --retrain or delete it."""
    for sidecar_path in sorted(Path(models_dir).glob(f"*-{key}.json")):
        path = sidecar_path.with_suffix(".keras")
        if not (path.is_file() and sidecar_path.is_file()):
            continue
        hint = f"rerun with --retrain or delete {sidecar_path}"
        meta = sidecars.read(sidecar_path, hint)
        if digest(meta.get("recipe")) != key:
            raise UserError(f"{sidecar_path}: damaged model sidecar: its training recipe does "
                            f"not hash to the key {key} in its name (edited?); {hint}")
        recipe = meta["recipe"].get("variant", {}) if isinstance(meta["recipe"], dict) else {}
        for field in ("preprocessing", "image_size"):  # the sidecar's copies of the recipe
            if field in recipe and field in meta and meta[field] != recipe[field]:
                raise UserError(f"{sidecar_path}: damaged model sidecar: {field} is "
                                f"{meta[field]!r}, but its training recipe has "
                                f"{recipe[field]!r}; {hint}")
        for field, value in {"config_key": key, **(expect or {})}.items():
            if meta.get(field) != value:
                raise UserError(f"{sidecar_path}: damaged model sidecar: {field} is "
                                f"{meta.get(field)!r}, but a model saved under this name has "
                                f"{value!r}; {hint}")
        return SavedModel(path, meta)
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
    """Load a project-made ``.keras`` model (safe mode: no code from the file runs); a
    truncated or edited file is a UserError saying --retrain or delete it."""
    import keras

    path = saved.model_path
    hint = f"rerun with --retrain or delete {path}"
    try:
        read_config(path, "keras")  # a truncated archive says so (Keras says "File not found")
    except UserError as error:
        problem = str(error).removeprefix(f"{path}: ")
        raise UserError(f"{path}: damaged cached model: {problem}; {hint}") from None
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - anything Keras raises means "cannot load"
        raise UserError(f"{path}: damaged cached model ({first_line(error)}); {hint}") from None
