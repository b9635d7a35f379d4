"""Grad-CAM (melanoma.explain.gradcam): exact checks against CAM on linear heads, nested
backbones, resizing, overlays, the localisation measure, the synthetic lesion masks, and
(slow) localisation by a B0 trained on the synthetic data."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.data import synthetic
from melanoma.data.preprocessing import get_preprocessing
from melanoma.explain import gradcam as gc
from melanoma.explain import localisation as loc
from melanoma.util.errors import UserError


def linear_head_model(size: int, output: str = "softmax", seed: int = 0):
    """Random-weight EfficientNet-B0 -> GlobalAveragePooling -> one Dense: Grad-CAM of such a
    head is exactly CAM (Selvaraju et al. 2017, sec. 3.1), which needs no gradients."""
    import keras

    keras.utils.set_random_seed(seed)
    base = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                             input_shape=(size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    units, activation = (2, "softmax") if output == "softmax" else (1, "sigmoid")
    out = keras.layers.Dense(units, activation=activation, name="head_out",
                             kernel_initializer=keras.initializers.RandomNormal(0, 0.5))(pooled)
    return keras.Model(base.input, out)


def expected_cam(model, pixels, preprocessing, class_index, out_size):
    """CAM by hand: ReLU(sum_k v_k A_k) with v the head's log-odds direction, upsampled
    bilinearly to the input, divided by its maximum, then resized to ``out_size``."""
    import keras
    import tensorflow as tf

    features = keras.Model(model.input, model.get_layer("top_activation").output)
    size = model.input_shape[1]
    x = np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.NEAREST))
                  for p in pixels]).astype(np.float32)
    a = np.asarray(features(preprocessing.apply(x), training=False), np.float64)
    kernel = model.get_layer("head_out").get_weights()[0]
    v = kernel[:, 1] - kernel[:, 0] if kernel.shape[1] == 2 else kernel[:, 0]
    v = v if class_index == 1 else -v
    cam = np.maximum(np.einsum("nhwk,k->nhw", a, v), 0)
    cam = tf.image.resize(cam[..., None], (size, size), method="bilinear")[..., 0].numpy()
    cam = cam / cam.reshape(len(cam), -1).max(axis=1)[:, None, None]
    return tf.image.resize(cam[..., None], out_size, method="bilinear")[..., 0].numpy()


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, (3, 80, 80, 3), dtype=np.uint8)


@pytest.mark.parametrize("output, class_index", [("softmax", 1), ("softmax", 0), ("sigmoid", 1)])
def test_equals_cam_on_a_linear_head(pixels, output, class_index):
    model = linear_head_model(128, output)
    pre = get_preprocessing("samplewise")
    heat = gc.gradcam(model, pixels, pre, class_index=class_index)
    assert heat.shape == (3, 80, 80) and heat.dtype == np.float32
    expected = expected_cam(model, pixels, pre, class_index, (80, 80))
    assert np.abs(heat - expected).max() < 1e-4
    assert 0.9 < heat.max() <= 1.0 and heat.min() >= 0  # peak 1 at input size, then resized
    assert heat.std() > 0.05  # a 4x4 map with structure, not a constant


def test_saturated_probabilities_still_give_the_logit_map(pixels):
    """p == 1.0 exactly in float32 has no gradient; the map comes from the logits."""
    import keras

    model = linear_head_model(128, seed=3)
    pre = get_preprocessing("native")
    x = np.stack([np.asarray(Image.fromarray(p).resize((128, 128), Image.Resampling.NEAREST))
                  for p in pixels]).astype(np.float32)
    pooled = np.asarray(keras.Model(model.input, model.get_layer("head_pool").output)(x))
    head = model.get_layer("head_out")
    kernel, bias = head.get_weights()
    margin = np.abs(pooled @ (kernel[:, 1] - kernel[:, 0]))
    head.set_weights([kernel * (300.0 / margin.min()), bias])  # logit gaps >= 300
    probs = np.asarray(model(x, training=False))
    assert np.all(np.max(probs, axis=1) == 1.0)  # saturated: 1 - p underflows to 0
    winner = int(np.argmax(probs[0]))
    heat = gc.gradcam(model, pixels, pre, class_index=winner)
    expected = expected_cam(model, pixels, pre, winner, (80, 80))
    assert heat[0].max() > 0.9 and np.abs(heat[0] - expected[0]).max() < 1e-4
    assert model.get_layer("head_out").activation.__name__ == "softmax"  # restored


def test_nested_backbone_gives_the_same_maps(pixels):
    """The factory's flat model and the same layers with the backbone as a sub-model."""
    import keras

    from melanoma.models.factory import build_classifier

    keras.utils.set_random_seed(1)
    flat = build_classifier("B0", 96, head_units=16)
    backbone = keras.Model(flat.input, flat.get_layer("top_activation").output, name="backbone")
    x = inputs = keras.Input((96, 96, 3))
    x = backbone(x)
    for name in ("head_pool", "head_dense", "head_softmax"):
        x = flat.get_layer(name)(x)
    nested = keras.Model(inputs, x)
    sequential = keras.Sequential([keras.Input((96, 96, 3)), backbone] + [
        flat.get_layer(name) for name in ("head_pool", "head_dense", "head_softmax")])
    pre = get_preprocessing("native")
    expected = gc.gradcam(flat, pixels, pre)
    for model in (nested, sequential):  # e.g. Sequential([EfficientNetB6(...), ...]) files
        path, layer = gc.find_layer(model)
        assert [m.name for m in path] == ["backbone"] and layer.name == "top_activation"
        np.testing.assert_allclose(gc.gradcam(model, pixels, pre), expected, atol=1e-5)


def test_a_branching_model_around_a_nested_backbone_is_refused(pixels):
    import keras

    keras.utils.set_random_seed(2)
    base = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                             input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    features = keras.layers.GlobalAveragePooling2D()(base(inputs))
    side = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    x = keras.layers.Concatenate()([features, side])
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(UserError, match="not in a plain chain"):
        gc.gradcam(model, pixels[:1], None)


def test_layer_choice_and_bad_inputs(pixels):
    import keras

    model = linear_head_model(64)
    assert gc.find_layer(model)[1].name == "top_activation"
    earlier = gc.gradcam(model, pixels[:1], None, layer="block6a_expand_activation")
    assert earlier.shape == (1, 80, 80)
    with pytest.raises(UserError, match="no layer 'nope'.*top_activation"):
        gc.gradcam(model, pixels, None, layer="nope")
    with pytest.raises(UserError, match="no 4-D"):
        gc.gradcam(model, pixels, None, layer="head_pool")
    with pytest.raises(UserError, match="uint8 images"):
        gc.gradcam(model, pixels.astype(np.float32), None)
    with pytest.raises(UserError, match="class_index"):
        gc.gradcam(model, pixels, None, class_index=2)
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(UserError, match="not a CNN"):
        gc.find_layer(dense)


def test_localisation_measure_by_hand():
    mask = np.zeros((10, 10))
    mask[2:6, 3:8] = 1.0  # 20 pixels = area 0.2
    assert loc.area_fraction(mask) == pytest.approx(0.2)
    assert loc.mass_inside(np.ones((10, 10)), mask) == pytest.approx(0.2)
    assert loc.mass_inside(mask * 0.7, mask) == pytest.approx(1.0)
    heat = np.zeros((10, 10))
    heat[2, 3], heat[9, 9] = 3.0, 1.0
    assert loc.mass_inside(heat, mask) == pytest.approx(0.75)
    summary = loc.localisation([heat, np.zeros((10, 10)), np.ones((10, 10))], [mask, mask, mask])
    assert summary["n"] == 2 and summary["n_empty"] == 1
    assert summary["mean_mass_inside"] == pytest.approx((0.75 + 0.2) / 2)
    assert summary["mean_area_fraction"] == pytest.approx(0.2)
    assert summary["frac_above_area"] == pytest.approx(0.5)  # 0.75 > 0.2; 0.2 is not > 0.2


SPEC = synthetic.SyntheticSpec(n_train_per_class=3, n_test_per_class=3, image_size=64, seed=11)


def test_lesion_masks_match_the_generated_files(tmp_path):
    root = synthetic.generate(tmp_path, SPEC)
    for path in sorted(root.rglob("*.jpg")):
        name = path.relative_to(root).as_posix()
        mask = synthetic.lesion_mask(SPEC, name)
        pixels, again = synthetic.render_one(SPEC, *_address(name), with_mask=True)
        assert mask.shape == (64, 64) and np.array_equal(mask, again)
        with Image.open(path) as img:  # the file's image, up to JPEG loss
            saved = np.asarray(img, np.int16)
        assert np.abs(saved - pixels).mean() < 8
        other = synthetic.render_one(SPEC, "test", 1, 2 if name != "test/Malignant/malignant_00002.jpg" else 1)
        assert np.abs(saved - other).mean() > 15
        inside = np.asarray(pixels, np.float32).mean(-1)[mask >= 0.5]
        outside = np.asarray(pixels, np.float32).mean(-1)[mask < 0.2]
        assert 0.02 < loc.area_fraction(mask) < 0.6 and inside.mean() < outside.mean() - 20
    assert not np.array_equal(synthetic.lesion_mask(SPEC, "test/Benign/benign_00000.jpg"),
                              synthetic.lesion_mask(replace(SPEC, seed=12),
                                                    "test/Benign/benign_00000.jpg"))
    for bad in ("test/Benign/malignant_00000.jpg", "x.jpg", "test/Benign/benign_x.jpg"):
        with pytest.raises(UserError, match="not a generated file name"):
            synthetic.lesion_mask(SPEC, bad)


def _address(name: str):
    split, class_dir, file = name.split("/")
    return split, synthetic.CLASS_DIRS.index(class_dir), int(file.split("_")[1][:5])


def test_localisation_figure(tmp_path):
    from melanoma.reporting.localisation_figure import localisation_figure

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    masks = np.zeros((3, 48, 48))
    masks[:, 10:30, 12:36] = 1
    path = localisation_figure(images, masks, rng.random((3, 48, 48)), tmp_path / "loc.png",
                               captions=["a", "b", "c"])
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 3 * 150
    with pytest.raises(UserError, match="localisation_figure needs"):
        localisation_figure(images, masks[:2], masks, tmp_path / "x.png")



# Localisation on the generated data (docs/report.md gives the measured figures and the
# command that made them; this is the training that measurement used). The generator centres
# every lesion, so a map that only favours the centre beats the area fraction too; the
# shuffled-mask control in the summary measures that.
LOC_SPEC = synthetic.SyntheticSpec(n_train_per_class=100, n_test_per_class=50, image_size=96,
                                   seed=1234)  # each image has its own seed


def localisation_model(name: str, size: int):
    """``tiny`` (3 convolutions, GAP, softmax; last map size/4 wide) or the factory's B0 as the
    default run builds it (random weights, BatchNorm momentum 0.9)."""
    import keras

    if name == "b0":
        from melanoma.models.factory import build_classifier

        return build_classifier("B0", size, head_units=128, bn_momentum=0.9)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((size, size, 3)),
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu", name="top_activation"),
        layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])


def train_and_localise(name: str, root, size: int, epochs: int, learning_rate: float, seed: int,
                       augment: bool = False, spec=LOC_SPEC):
    """Train ``name`` on ``root`` (``spec``'s data); (Localisation summary, test AUC)."""
    import keras
    from sklearn.metrics import roc_auc_score

    from melanoma.data import decode, layout
    from melanoma.data.augmentation import Augmentation
    from melanoma.data.loader import array_batches
    from melanoma.explain.localisation import check_synthetic
    from melanoma.models.image_input import with_image_input
    from melanoma.models.training import compile_classifier

    def load(split):
        loaded = decode.load_images(split.files, split.labels, size, "nearest")
        return loaded.pixels, loaded.labels, [Path(f).relative_to(root).as_posix()
                                              for f in loaded.files]

    found = layout.discover(root)
    pre = get_preprocessing("samplewise")
    aug = (Augmentation(rotation_deg=20.0, shear_deg=0.2, horizontal_flip=True, vertical_flip=True)
           if augment else Augmentation())
    keras.utils.set_random_seed(seed)
    network = localisation_model(name, size)  # the warp and preprocessing run in the model
    model = compile_classifier(with_image_input(network, aug, pre, seed), learning_rate,
                               jit_compile=False)
    x, y, _ = load(found.train)
    train = array_batches(x, y, 32, shuffle=True, seed=seed)
    model.fit(train, epochs=epochs, verbose=0)
    tx, ty, files = load(found.test)
    probs = model.predict(array_batches(tx, None, 64), verbose=0)[:, 1]
    return (check_synthetic(network, pre, spec, files, ty, probs, tx).summary,
            float(roc_auc_score(ty, probs)))


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("loc"), LOC_SPEC)


@pytest.mark.slow
def test_gradcam_localises_lesions_with_a_fine_feature_map(generated_root):
    """A 3-layer CNN whose last conv map is 16x16 at 64 px (15 epochs of 200 images: slow,
    and its AUC bound comes from one seed). Measured on seeds 0-4 (docs/report.md);
    bound: ratio >= 1.5, below the lowest seed, and at least 80% of the images above their
    own mask's area."""
    summary, auc = train_and_localise("tiny", generated_root, 64, 15, 3e-3, seed=0)
    assert auc > 0.85 and summary["n"] >= 20, (auc, summary)  # enough correct melanomas
    assert summary["ratio"] >= 1.5, summary
    assert summary["frac_above_area"] >= 0.8, summary


def test_case_heatmaps_feed_the_gallery(tmp_path):
    """Gallery cases -> Grad-CAM of each file as the pipeline decodes it -> overlays in HTML."""
    import pandas as pd

    from melanoma.data import decode as images
    from melanoma.reporting import galleries

    root = synthetic.generate(tmp_path, SPEC)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "test").rglob("*.jpg"))
    predictions = pd.DataFrame({"variant": "v", "file": files,
                                "label": [int("Malignant" in f) for f in files],
                                "prob_malignant": np.linspace(0.05, 0.95, len(files))})
    cases = galleries.select_cases(predictions, k=2, n_true_positives=1)
    model = linear_head_model(64)
    pre = get_preprocessing("samplewise")
    heat = gc.case_heatmaps(model, pre, list(cases["file"]) + ["test/Benign/gone.jpg"], root)
    assert set(heat) == set(cases["file"])
    pixels = images.load_images([root / f for f in cases["file"]], [0] * len(cases), 64).pixels
    np.testing.assert_allclose(np.stack([heat[f] for f in cases["file"]]),
                               gc.gradcam(model, pixels, pre), atol=1e-6)
    thumbs = galleries.load_thumbnails(cases["file"], root)
    fragment = galleries.gallery_html(cases, thumbs, {"v": galleries.overlays_for(thumbs, heat)})
    assert fragment.count('alt="Grad-CAM: ') == len(cases)


@pytest.mark.slow
def test_b0_last_block_heat_maps_favour_the_lesion(tmp_path):
    """The default run's model (EfficientNet-B0, random weights, lr 1e-3, BatchNorm momentum
    0.9, the default augmentation, 10 epochs of 300 images) at 128 px, where top_activation is
    4x4. Measured on seeds 0-2 (docs/report.md; 2 shared cores, ~8 min per seed): mass
    inside the lesion 0.42, 0.38, 0.34 vs area 0.30, 0.28, 0.27
    (ratio 1.40, 1.38, 1.26; 94-98% of 34-46 images above their own area). The shuffled-mask
    control is as high (0.41, 0.36, 0.34): at 4x4 the map is a centred blob, and the generator
    centres its lesions. So this holds "above the area" (bound 1.15, under the lowest seed),
    not lesion-shaped maps; at 64 px (2x2, the default run) the ratio is about 1."""
    spec = replace(LOC_SPEC, n_train_per_class=150)
    root = synthetic.generate(tmp_path, spec)
    summary, auc = train_and_localise("b0", root, 128, 10, 1e-3, seed=0, augment=True, spec=spec)
    assert auc > 0.75 and summary["n"] >= 20, (auc, summary)
    assert summary["ratio"] >= 1.15, summary
    assert summary["frac_above_area"] >= 0.85, summary


def test_a_reloaded_sequential_gives_the_same_maps(tmp_path, pixels, gradcam_model):
    """A Sequential read back from .keras holds a second call of its layers: the maps must
    come from the call its output uses (they were empty gradients, a TF error, before)."""
    import keras

    model = gradcam_model()
    before = gc.gradcam(model, pixels)
    model.save(tmp_path / "seq.keras")
    loaded = keras.saving.load_model(tmp_path / "seq.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(gc.gradcam(loaded, pixels), before, atol=1e-6)
    assert before.reshape(len(before), -1).max(axis=1).min() > 0.5  # non-empty maps
