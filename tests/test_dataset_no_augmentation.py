"""make_dataset with labels and no (or inactive) augmentation yields (x, y) batches."""
import numpy as np

from melanoma.data.augmentation import Augmentation
from melanoma.data.pipeline import make_dataset
from melanoma.data.preprocessing import get_preprocessing


def test_labelled_batches_without_augmentation():
    pixels = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    labels = np.array([0, 1, 0, 1, 1])
    for aug in (None, Augmentation()):
        batches = list(make_dataset(pixels, labels, 2, get_preprocessing("rescale"), aug,
                                    shuffle=True, seed=1))
        assert [tuple(x.shape) for x, _ in batches] == [(2, 4, 4, 3), (2, 4, 4, 3), (1, 4, 4, 3)]
        y = np.concatenate([y.numpy() for _, y in batches])
        assert y.shape == (5, 2) and y.sum() == 5
