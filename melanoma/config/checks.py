"""Per-field validators of the config dataclasses: ``check(value) -> error text or None``."""
from __future__ import annotations

import math

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
        return f"must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] pixels (EfficientNet's minimum " \
               f"is {MIN_IMAGE_SIZE}; B7's native size is 600)"
    return None
