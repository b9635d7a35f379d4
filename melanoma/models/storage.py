"""Saved models: ``.keras`` file + JSON sidecar, found again by the variant's config hash.

The sidecar holds what evaluation needs without guessing (variant, class names, image
size, preprocessing and its featurewise mean, config hash, versions). Both files are
written atomically: a killed run leaves no half-written model behind. Both are checked
when read back: a damaged or edited one is a one-line error naming the file and the way
out (``--retrain``, or delete it), never a Keras or JSON traceback.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from melanoma.data.decode import INTERPOLATIONS
from melanoma.data.layout import CLASS_NAMES
from melanoma.data.preprocessing import PREPROCESSING
from melanoma.util import atomic
from melanoma.util.errors import UserError
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


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _history_problem(history) -> str | None:
    if not isinstance(history, dict) or not all(
            isinstance(v, list) and all(x is None or _number(x) for x in v)
            for v in history.values()):
        return "history must map each metric to a list of numbers"
    return None


def sidecar_problem(meta) -> str | None:
    """What is wrong with a sidecar's content (one phrase), or None when it is usable."""
    if not isinstance(meta, dict):
        return f"not a JSON object but {type(meta).__name__}"
    name = meta.get("preprocessing")
    if name not in PREPROCESSING:
        return f"preprocessing {name!r} is not one of {', '.join(PREPROCESSING)}"
    mean = meta.get("featurewise_mean")
    if mean is None and PREPROCESSING[name].needs_fit:
        return f"featurewise_mean is missing ({name} needs its training mean)"
    if mean is not None and not (isinstance(mean, list) and len(mean) == 3 and all(
            _number(m) and math.isfinite(m) for m in mean)):
        return f"featurewise_mean must be three finite numbers, got {mean!r}"
    if "class_names" in meta and meta["class_names"] != list(CLASS_NAMES):
        return f"class_names {meta['class_names']!r} are not {list(CLASS_NAMES)!r}"
    size = meta.get("image_size", 32)
    if not (isinstance(size, int) and not isinstance(size, bool) and 32 <= size <= 2048):
        return f"image_size {size!r} is not a whole number in [32, 2048]"
    if meta.get("interpolation", "nearest") not in INTERPOLATIONS:
        return f"interpolation {meta['interpolation']!r} is not one of {', '.join(INTERPOLATIONS)}"
    variant = meta.get("variant", {})
    batch = variant.get("val_batch_size", 1) if isinstance(variant, dict) else None
    if not (isinstance(batch, int) and not isinstance(batch, bool) and batch > 0):
        return "variant must be an object whose val_batch_size is a positive whole number"
    return _history_problem(meta.get("history", {}))


def read_sidecar(path: Path, hint: str) -> dict:
    """A sidecar's content, checked; else a UserError naming it, what is wrong and ``hint``."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        problem = f"unreadable ({error})"
    except ValueError as error:
        problem = f"not valid JSON ({error})"
    else:
        problem = sidecar_problem(meta)
    if problem:
        raise UserError(f"{path}: damaged model sidecar: {problem}; {hint}")
    return meta


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
        meta = read_sidecar(sidecar_path, hint)
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

    from melanoma.models.loading import first_line, read_config

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
