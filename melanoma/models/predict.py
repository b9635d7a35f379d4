"""Malignant-class probabilities of a model, plain or with flip test-time augmentation."""
from __future__ import annotations

import numpy as np

from melanoma.data.decode import LoadedImages
from melanoma.data.pipeline import make_dataset

TTA_FLIPS = (lambda x: x, lambda x: x[:, :, ::-1], lambda x: x[:, ::-1], lambda x: x[:, ::-1, ::-1])
TTA_SUFFIX = "+tta"


def predict(model, images: LoadedImages, preprocessing, batch_size: int) -> np.ndarray:
    """Malignant-class probabilities for ``images``."""
    data = make_dataset(images.pixels, None, batch_size, preprocessing)
    return model.predict(data, verbose=0)[:, 1].astype(np.float64)


def predict_tta(model, images: LoadedImages, preprocessing, batch_size: int) -> np.ndarray:
    """Test-time augmentation: the mean probability over identity, horizontal, vertical and
    both flips (applied to the uint8 pixels, before preprocessing, as training's flips)."""
    runs = [predict(model, LoadedImages(np.ascontiguousarray(flip(images.pixels)), images.labels,
                                        images.files, ()), preprocessing, batch_size)
            for flip in TTA_FLIPS]
    return np.mean(runs, axis=0)


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
