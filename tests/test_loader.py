"""melanoma.data.loader: uint8 batches of cache rows; each epoch's order a pure function of
(seed, epoch); balanced sampling; test-time flips; read-ahead that never changes a batch."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from melanoma.data.loader import ArrayRows, CacheBatches, array_batches, epoch_rows


def _pixels(n=23, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    rows = np.arange(100, 140)
    first = [epoch_rows(rows, None, 5, e)[0] for e in range(3)]
    again = [epoch_rows(rows, None, 5, e)[0] for e in (2, 0, 1)]  # any order of asking
    assert [a.tolist() for a in first] == [again[1].tolist(), again[2].tolist(), again[0].tolist()]
    assert all(sorted(o.tolist()) == rows.tolist() for o in first)
    assert len({tuple(o) for o in first}) == 3  # reshuffled each epoch
    assert epoch_rows(rows, None, 6, 0)[0].tolist() != first[0].tolist()
    assert epoch_rows(rows, None, 5, 0, shuffle=False)[0].tolist() == rows.tolist()


def test_balanced_epochs_oversample_the_minority_afresh():
    indices = np.arange(100, 123)  # rows of a cache: 16 benign, 7 malignant
    labels = np.array([0] * 16 + [1] * 7)
    order = np.random.default_rng(1).permutation(23)
    indices, labels = indices[order], labels[order]
    truth = dict(zip(indices.tolist(), labels.tolist()))
    epochs = [epoch_rows(indices, labels, 5, e, balanced=True) for e in range(3)]
    for rows, ys in epochs:
        assert len(rows) == 32 and all(truth[r] == y for r, y in zip(rows.tolist(), ys.tolist()))
        counts = Counter(rows.tolist())
        assert all(counts[r] == 1 for r in indices[labels == 0])  # the majority once
        assert sorted(counts[r] for r in indices[labels == 1]) == [2] * 5 + [3] * 2
    drawn = [frozenset(r for r, c in Counter(rows.tolist()).items() if c == 3) for rows, _ in epochs]
    assert len(set(drawn)) > 1  # the extra two differ between epochs
    with pytest.raises(ValueError, match="both classes"):
        epoch_rows(indices[labels == 0], labels[labels == 0], 0, 0, balanced=True)


def test_balanced_malignant_majority_and_exact_multiples():
    rows, ys = epoch_rows(np.arange(12), np.array([1] * 8 + [0] * 4), 0, 0, balanced=True)
    assert Counter(ys.tolist()) == {0: 8, 1: 8}
    assert Counter(rows.tolist()) == {**{r: 1 for r in range(8)}, **{r: 2 for r in range(8, 12)}}


@pytest.mark.parametrize("workers", [0, 2])
def test_repeating_batches_follow_each_epochs_order(workers):
    pixels, labels = _pixels(), np.arange(23) % 2
    data = array_batches(pixels, labels, 5, shuffle=True, seed=3, repeat=True, workers=workers)
    assert data.num_batches is None and data.batches_per_epoch == len(data) == 5
    got = [data[i] for i in range(15)]
    for epoch in range(3):
        rows, ys = epoch_rows(np.arange(23), labels, 3, epoch)
        x = np.concatenate([b[0] for b in got[5 * epoch:5 * epoch + 5]])
        y = np.concatenate([b[1] for b in got[5 * epoch:5 * epoch + 5]])
        assert x.dtype == np.uint8 and np.array_equal(x, pixels[rows])
        assert np.array_equal(y.argmax(1), ys) and y.dtype == np.float32
    data.start_at(2)  # a resumed run: batch 0 is the first of epoch 2, whatever came before
    assert all(np.array_equal(data[i][0], got[10 + i][0]) for i in range(5))
    data.close()


def test_prediction_batches_keep_order_and_flip_uint8_pixels():
    pixels = _pixels(11)
    data = CacheBatches(ArrayRows(pixels), np.arange(11)[::-1], None, 4, flip_axes=(1, 2))
    assert data.num_batches == 3 and [len(data[i]) for i in range(3)] == [4, 4, 3]
    got = np.concatenate([data[i] for i in range(3)])
    assert np.array_equal(got, pixels[::-1, ::-1, ::-1])
    with pytest.raises(IndexError):
        data[3]
    dropped = CacheBatches(ArrayRows(pixels), np.arange(11), None, 4, drop_remainder=True)
    assert len(dropped) == 2


def test_padded_prediction_batches_have_one_shape_and_the_same_outputs():
    """pad_remainder fills the last batch with copies of its last image (one shape: an XLA
    predict compiles once); cut to the real rows, the outputs equal the unpadded ones."""
    import keras

    pixels = _pixels(11)
    padded = CacheBatches(ArrayRows(pixels), np.arange(11), None, 4, pad_remainder=True)
    assert [len(padded[i]) for i in range(3)] == [4, 4, 4] and padded.rows_per_epoch == 11
    assert np.array_equal(padded[2][:3], pixels[8:]) and np.array_equal(padded[2][3], pixels[10])
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(x)))
    plain = model.predict(CacheBatches(ArrayRows(pixels), np.arange(11), None, 4), verbose=0)
    cut = model.predict(padded, verbose=0)[:padded.rows_per_epoch]
    assert cut.shape == plain.shape == (11, 2)
    np.testing.assert_allclose(cut, plain, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pad_remainder is for inference"):
        array_batches(pixels, np.zeros(11), 4, pad_remainder=True)


def test_reads_only_through_the_cache_row_api(tmp_path):
    """Batches from a real decoded cache equal its rows (read with read_rows, nothing else)."""
    from PIL import Image

    from melanoma.data import cache as cache_mod

    pixels = _pixels(6, 16, seed=4)
    files = []
    for k, image in enumerate(pixels):
        files.append(tmp_path / f"{k}.png")
        Image.fromarray(image).save(files[-1])
    built = cache_mod.open_or_build(files, np.arange(6) % 2, 16, "nearest", tmp_path / "c")
    data = CacheBatches(built, [5, 0, 3], built.labels[[5, 0, 3]], 2)
    x = np.concatenate([data[0][0], data[1][0]])
    assert np.array_equal(x, pixels[[5, 0, 3]])


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="balanced sampling needs labels"):
        array_batches(_pixels(4), None, 2, balanced=True)
    with pytest.raises(ValueError, match="4 rows but 3 labels"):
        array_batches(_pixels(4), np.zeros(3), 2)
    with pytest.raises(ValueError, match="batch_size"):
        array_batches(_pixels(4), None, 0)
