"""The stratified, seeded train/validation split of the training folder.

Batches come from melanoma/data/loader.py (uint8 rows of the decoded-image cache);
augmentation and preprocessing run inside the model (melanoma/models/image_input.py).
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def split_train_val(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded indices (train, val) of the training folder (85/15 by default)."""
    indices = np.arange(len(labels))
    train, val = train_test_split(indices, test_size=val_fraction, stratify=labels,
                                  random_state=seed, shuffle=True)
    return np.sort(train), np.sort(val)
