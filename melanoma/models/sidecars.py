"""The JSON sidecar this project writes beside each ``.keras`` model: what evaluation needs
without guessing (variant, class names, image size, preprocessing and its featurewise mean,
the training recipe, versions, history), and the checks that keep a damaged or edited one
from becoming a wrong number.

    meta = sidecars.read(path, hint)   # checked; a UserError naming the file and ``hint``
    meta = sidecars.beside(model_path) # the sidecar next to a model file, or None
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from melanoma.data.decode import INTERPOLATIONS
from melanoma.data.layout import CLASS_NAMES
from melanoma.data.preprocessing import PREPROCESSING
from melanoma.util.errors import UserError, first_line


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


def read(path: Path, hint: str) -> dict:
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


def beside(path: Path) -> dict | None:
    """The JSON metadata this project writes next to its ``.keras`` files, if present."""
    sidecar = path.with_suffix(".json")
    if path.is_dir() or not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{sidecar}: unreadable metadata sidecar ({first_line(error)})") from None
    if not (isinstance(meta, dict) and "preprocessing" in meta):
        return None  # some other JSON beside the model, not ours
    problem = sidecar_problem(meta)
    if problem:
        raise UserError(f"{sidecar}: damaged model sidecar: {problem}; restore it, or delete it "
                        f"and pass --preprocessing")
    return meta
