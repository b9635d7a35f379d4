"""Per-field validators of the config dataclasses: ``check(value) -> error text or None``.

Each is attached to its field with ``_checked`` in :mod:`melanoma.config`, so a field's
rule sits beside its declaration and every failure is one UserError line.
"""
from __future__ import annotations

import math

from melanoma.evaluation.metric_table import SCORED
from melanoma.models.backbones import MIN_IMAGE_SIZE

MAX_IMAGE_SIZE = 2048  # 2048x2048x3 uint8 is 12 MB an image: beyond any dermoscopy benchmark
CLASS_NAMES = ("benign", "malignant")


def positive_int(value):
    return None if isinstance(value, int) and value > 0 else "must be a positive integer"


def finite_positive(value):
    return None if math.isfinite(value) and value > 0 else "must be a finite number above 0"


def unit_interval_open_right(value):
    return None if 0 <= value < 1 else "must be in [0, 1)"


def open_unit_interval(value):
    return None if 0 < value < 1 else "must be in (0, 1)"


def non_negative_int(value):
    return None if isinstance(value, int) and value >= 0 else "must be an integer >= 0"


def jit_compile_check(value):
    return None if value in (True, False, "auto") else 'must be true, false or "auto"'


AUGMENT_PLACEMENTS = ("auto", "pipeline", "device")


def augment_on_check(value):
    return None if value in AUGMENT_PLACEMENTS else (
        f"must be one of {', '.join(repr(p) for p in AUGMENT_PLACEMENTS)}")


def class_weight_check(value):
    if value in ("none", "balanced"):
        return None
    if (isinstance(value, dict) and set(value) == set(CLASS_NAMES)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                    and w > 0 for w in value.values())):
        return None
    return 'must be "none", "balanced" or a table {benign = w0, malignant = w1} of positive numbers'


def image_size_check(value):
    if value is None:
        return None
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        return f"must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] pixels (the smallest input a " \
               f"keras.applications backbone takes is {MIN_IMAGE_SIZE}; B7's native size is 600)"
    return None


def seeds_check(value):
    """``seeds = [..]``: a non-empty list of distinct integers >= 0 (None: the one ``seed``)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        return "must be a non-empty list of integers >= 0"
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
        return "must hold only integers >= 0"
    if len(set(value)) != len(value):
        return "must not repeat a seed"
    return None


def published_check(value):
    """``published = {accuracy = 0.9386, auc = 0.9833}``: known metrics, values in [0, 1]."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        return "must be a table of metric = value, e.g. {accuracy = 0.9386, auc = 0.9833}"
    unknown = [k for k in value if k not in SCORED]
    if unknown:
        return f"names unknown metric(s) {', '.join(map(str, unknown))} (known: {', '.join(SCORED)})"
    bad = [k for k, v in value.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not 0 <= v <= 1]
    if bad:
        return f"values must be numbers in [0, 1] ({', '.join(bad)} is not)"
    return None
