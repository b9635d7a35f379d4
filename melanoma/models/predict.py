"""Malignant-class probabilities of a model on a cached split, plain or with flip
test-time augmentation."""
from __future__ import annotations

import numpy as np

from melanoma.data.stream import make_stream_dataset

# identity, horizontal, vertical, both: axes of the uint8 (B, H, W, C) batch to reverse
TTA_AXES = ((), (2,), (1,), (1, 2))
TTA_SUFFIX = "+tta"


def predict(model, split, preprocessing, batch_size: int, flip_axes: tuple = ()) -> np.ndarray:
    """Malignant-class probabilities for the rows of a cached ``split``."""
    data = make_stream_dataset(split.cache, split.index, None, batch_size, preprocessing,
                               flip_axes=flip_axes)
    return model.predict(data, verbose=0)[:, 1].astype(np.float64)


def predict_tta(model, split, preprocessing, batch_size: int) -> np.ndarray:
    """Test-time augmentation: the mean probability over identity, horizontal, vertical and
    both flips (applied to the uint8 pixels, before preprocessing, as training's flips)."""
    return np.mean([predict(model, split, preprocessing, batch_size, axes) for axes in TTA_AXES],
                   axis=0)


def predict_splits(model, splits, preprocessing, batch_size: int,
                   tta: bool) -> dict[str, np.ndarray]:
    """{"test", "val"} probabilities, plus {"test+tta", "val+tta"} when ``tta``."""
    out = {"test": predict(model, splits.test, preprocessing, batch_size),
           "val": predict(model, splits.val, preprocessing, batch_size)}
    if tta:
        for split in ("test", "val"):
            out[split + TTA_SUFFIX] = predict_tta(model, getattr(splits, split), preprocessing,
                                                  batch_size)
    return out
