"""Malignant-class probabilities of a model on a cached split, plain or with flip
test-time augmentation: uint8 batches from the loader, preprocessing in the model's input
layer in inference mode (the very layer training ran)."""
from __future__ import annotations

import numpy as np

# identity, horizontal, vertical, both: axes of the uint8 (B, H, W, C) batch to reverse
TTA_AXES = ((), (2,), (1,), (1, 2))
TTA_SUFFIX = "+tta"


def predict_rows(model, data) -> np.ndarray:
    """``model.predict`` over loader batches, cut to the loader's real rows (its last batch
    may be padded: ``CacheBatches.pad_remainder``)."""
    return np.asarray(model.predict(data, verbose=0))[:data.rows_per_epoch]


def predict(model, split, batch_size: int, flip_axes: tuple = ()) -> np.ndarray:
    """Malignant-class probabilities for the rows of a cached ``split``; ``model`` takes
    uint8 images (:func:`melanoma.models.image_input.for_inference`)."""
    from melanoma.data.loader import CacheBatches  # Keras loads here, after the run's checks

    data = CacheBatches(split.cache, split.index, None, batch_size, flip_axes=flip_axes,
                        pad_remainder=True)
    return predict_rows(model, data)[:, 1].astype(np.float64)


def predict_tta(model, split, batch_size: int) -> np.ndarray:
    """Test-time augmentation: the mean probability over identity, horizontal, vertical and
    both flips (applied to the uint8 pixels, before preprocessing, as training's flips)."""
    return np.mean([predict(model, split, batch_size, axes) for axes in TTA_AXES], axis=0)


def predict_splits(network, splits, preprocessing, batch_size: int,
                   tta: bool) -> dict[str, np.ndarray]:
    """{"test", "val"} probabilities of ``network`` (preprocessed float32 input, as saved),
    plus {"test+tta", "val+tta"} when ``tta``."""
    from melanoma.models.image_input import for_inference

    model = for_inference(network, preprocessing)  # built once: one trace for every split
    out = {"test": predict(model, splits.test, batch_size),
           "val": predict(model, splits.val, batch_size)}
    if tta:
        for split in ("test", "val"):
            out[split + TTA_SUFFIX] = predict_tta(model, getattr(splits, split), batch_size)
    return out
