"""Tests for melanoma.models.training: a pooled (reset) model trains exactly like a fresh one, and the
validation metrics logged per epoch are the exact ones.

Tiny on purpose: 32 px, 16 training images, one epoch of two batches. The pool does not
care what the network is, so the default tier uses a small network with what a reset must
get right (convolution, BatchNorm statistics, dropout's random state, the augmenting input
layer): about 15 s. The same claims on EfficientNet-B0 (three traces of its training step,
about 3 minutes on 2 cores) are the ``slow`` parameter.
"""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.data.augmentation import Augmentation
from melanoma.data.loader import array_batches
from melanoma.data.preprocessing import get_preprocessing
from melanoma.models import training
from melanoma.models.factory import build_classifier
from melanoma.models.image_input import configure, with_image_input

SEED = 3
SIZE = 32
ARCH = "b0-32-test"
AUG = Augmentation(rotation_deg=20.0, shear_deg=0.2, horizontal_flip=True, vertical_flip=True)


def images(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    pixels = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
    pixels[labels == 1] //= 2  # darker malignant images: something to learn
    return pixels, labels


TRAIN = images(16, 0)
VAL = images(8, 1)


def small_network():
    layers = keras.layers
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), layers.Conv2D(8, 3, strides=2, activation="relu"),
        layers.BatchNormalization(momentum=0.1), layers.Conv2D(16, 3, strides=2),
        layers.GlobalAveragePooling2D(), layers.Dropout(0.3), layers.Dense(8, activation="relu"),
        layers.Dense(2, activation="softmax")], name="small")


NETWORKS = {
    "small": small_network,
    # momentum 0.1: after two steps the moving BatchNorm statistics are near the batch ones,
    # so validation predictions differ between images (at 0.99 they are all but tied)
    "B0": lambda: build_classifier("B0", SIZE, "none", head_units=8, bn_momentum=0.1),
}
NETWORK = {"name": "small"}  # which one build() makes: set by the module fixture


def build():
    return with_image_input(NETWORKS[NETWORK["name"]](), AUG, get_preprocessing("native"), SEED)


def train(pool, preprocessing, learning_rate, label, seed=SEED):
    """What runs/benchmark.py does per job: seed, take the model from the pool, fit."""
    keras.utils.set_random_seed(seed)
    model = pool.get(ARCH, build, learning_rate, init_key=seed)
    prep = get_preprocessing(preprocessing).fit(TRAIN[0])
    configure(model, AUG, prep)  # after the pool's reset: the variant's ranges and steps
    train_data = array_batches(*TRAIN, batch_size=8, shuffle=True, seed=seed, repeat=True)
    val_data = array_batches(VAL[0], None, batch_size=8)
    history = training.fit(model, train_data, val_data, VAL[1], epochs=1, label=label)
    weights = [v.numpy().copy() for v in model.variables]
    return model, history, weights, model.predict(val_data, verbose=0)


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module", params=["small", pytest.param("B0", marks=pytest.mark.slow)])
def runs(request, op_determinism):
    """Every training of this file, under op determinism (restored after): the claims below
    are bit-for-bit equalities between a pooled and a fresh model, which hold on one machine
    with deterministic ops and are what `run` relies on (it turns them on on a CPU)."""
    NETWORK["name"] = request.param
    with op_determinism():
        return _train_all()


def _train_all() -> dict:
    pool = ModelPoolSpy()
    first = train(pool, "rescale", 1e-3, "A")
    initial = [v.copy() for v in pool.snapshot]
    pooled = train(pool, "samplewise", 5e-4, "B pooled")
    builds_after_pooled = pool.builds
    fresh_pool = ModelPoolSpy()
    fresh = train(fresh_pool, "samplewise", 5e-4, "B fresh")
    # another seed on the same traced model, then the first seed again
    other_seed = train(pool, "samplewise", 5e-4, "C pooled", seed=SEED + 1)
    other_seed_fresh = train(ModelPoolSpy(), "samplewise", 5e-4, "C fresh", seed=SEED + 1)
    back = train(pool, "samplewise", 5e-4, "B again", seed=SEED)
    return dict(pool=pool, first=first, initial=initial, pooled=pooled, fresh=fresh,
                fresh_pool=fresh_pool, builds_after_pooled=builds_after_pooled,
                other_seed=other_seed, other_seed_fresh=other_seed_fresh, back=back)


class ModelPoolSpy(training.ModelPool):
    """ModelPool that counts builds and exposes the snapshot (behaviour unchanged)."""

    def __init__(self):
        super().__init__()
        self.builds = 0

    def get(self, architecture_key, build, learning_rate, jit_compile="auto", init_key=None):
        def counted():
            self.builds += 1
            return build()

        return super().get(architecture_key, counted, learning_rate, jit_compile, init_key)

    @property
    def snapshot(self):
        return self._entries[ARCH][2]


def test_pool_reuses_one_model(runs):
    assert runs["pooled"][0] is runs["first"][0]
    assert runs["builds_after_pooled"] == 1
    assert runs["fresh"][0] is not runs["first"][0] and runs["fresh_pool"].builds == 1


def test_training_moved_the_weights(runs):
    """Otherwise the exactness test below could pass without any reset."""
    assert not same(runs["first"][2], runs["initial"])
    assert not same(runs["first"][2], runs["pooled"][2])


def test_pooled_model_trains_exactly_like_a_fresh_build(runs):
    _, pooled_history, pooled_weights, pooled_probs = runs["pooled"]
    fresh_model, fresh_history, fresh_weights, fresh_probs = runs["fresh"]
    assert ([v.shape for v in runs["pooled"][0].variables]
            == [v.shape for v in fresh_model.variables])
    assert same(pooled_weights, fresh_weights)
    np.testing.assert_array_equal(pooled_probs, fresh_probs)
    assert pooled_history == fresh_history


def test_fresh_build_with_same_seed_has_the_snapshot_weights(runs):
    assert same(runs["fresh_pool"].snapshot, runs["pool"].snapshot)


def test_another_seed_shares_the_model_and_trains_exactly_like_a_fresh_build(runs):
    """Seeds share the traced model: a fresh (untraced) seeded build's values are copied in.
    The result equals a fresh model of that seed, and going back to the first seed gives
    the first seed's result again: neither seed order nor sharing changes a number."""
    model, history, weights, probs = runs["other_seed"]
    _, fresh_history, fresh_weights, fresh_probs = runs["other_seed_fresh"]
    assert model is runs["first"][0]
    assert not same(weights, runs["pooled"][2])  # another seed really is another draw
    assert same(weights, fresh_weights) and history == fresh_history
    np.testing.assert_array_equal(probs, fresh_probs)
    back_model, back_history, back_weights, back_probs = runs["back"]
    assert back_model is model
    assert same(back_weights, runs["pooled"][2]) and back_history == runs["pooled"][1]
    np.testing.assert_array_equal(back_probs, runs["pooled"][3])


def test_optimizer_state_is_reset(runs):
    pooled, fresh = runs["pooled"][0], runs["fresh"][0]
    assert int(pooled.optimizer.iterations.numpy()) == 2  # 16 images / batch 8, not 4
    assert float(pooled.optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    assert same([v.numpy() for v in pooled.optimizer.variables],
                [v.numpy() for v in fresh.optimizer.variables])


def test_other_architecture_gets_its_own_model(runs):
    pool = runs["pool"]
    builds = pool.builds
    other = pool.get("another-arch", build, 1e-3)
    assert other is not runs["first"][0] and pool.builds == builds + 1


def test_validation_metrics_are_exact(runs):
    _, history, _, probs = runs["fresh"]
    p = probs[:, 1].astype(np.float64)
    y = VAL[1]
    assert len(np.unique(p)) >= 6  # not tied: the AUC below is not a trivial 0.5
    assert roc_auc_score(y, p) != 0.5
    assert set(history) >= {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}
    assert len(history["val_auc"]) == 1
    assert history["val_auc"][0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert history["val_accuracy"][0] == pytest.approx(np.mean((p >= 0.5) == y), abs=1e-12)
    expected_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert history["val_loss"][0] == pytest.approx(expected_loss, rel=1e-6)


def test_validation_metrics_callback_on_known_predictions():
    """The callback against fixed predictions where sklearn's AUC is known by hand (3/4)."""

    class Fixed:
        def predict(self, data, verbose=0):
            return np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]], np.float32)

    callback = training.ValidationMetrics(None, [0, 0, 1, 1])
    callback.set_model(Fixed())
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_auc"] == pytest.approx(0.75)  # pairs: (.3>.1, .3<.6, .8>.1, .8>.6)
    assert logs["val_accuracy"] == pytest.approx(0.5)  # .1 ok, .6 wrong, .3 wrong, .8 ok
