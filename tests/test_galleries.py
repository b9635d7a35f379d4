"""melanoma.reporting.galleries: which cases are picked, the PNG, the HTML fragment; no TF."""
import base64
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.reporting import galleries
from melanoma.reporting.figures import slug
from melanoma.util.errors import UserError


def random_predictions(seed: int, n: int = 60, variants=("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    blocks = []
    for variant in variants:
        labels = rng.integers(0, 2, n)
        blocks.append(pd.DataFrame({
            "variant": variant, "file": [f"test/x/img_{i:03d}.jpg" for i in rng.permutation(n)],
            "label": labels, "prob_malignant": np.round(rng.random(n), 2)}))  # ties on purpose
    return pd.concat(blocks, ignore_index=True)


def by_hand(group: pd.DataFrame, k: int, t: float):
    """(false negatives, false positives, true-positive files) from plain sorted lists."""
    rows = list(zip(group["file"], group["label"], group["prob_malignant"]))
    fn = sorted((p, f) for f, y, p in rows if y == 1 and p < t)[:k]
    fp = sorted(((-p, f) for f, y, p in rows if y == 0 and p >= t))[:k]
    tp = {f for f, y, p in rows if y == 1 and p >= t}
    return [f for _, f in fn], [f for _, f in fp], tp


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [0, 1, 4])
def test_selection_matches_a_hand_computation(seed, k):
    predictions = random_predictions(seed)
    thresholds = {"a": 0.35, "b": float("nan")}  # b: undefined threshold -> argmax (0.5)
    cases = galleries.select_cases(predictions, k=k, threshold=thresholds, n_true_positives=3,
                                   seed=seed)
    assert list(cases.columns) == list(galleries.COLUMNS)
    for variant, t in (("a", 0.35), ("b", 0.5)):
        mine = cases[cases["variant"] == variant]
        fn, fp, tp = by_hand(predictions[predictions["variant"] == variant], k, t)
        assert list(mine.loc[mine["kind"] == "false_negative", "file"]) == fn
        assert list(mine.loc[mine["kind"] == "false_positive", "file"]) == fp
        sample = mine[mine["kind"] == "true_positive"]
        assert len(sample) == min(3, len(tp)) and set(sample["file"]) <= tp
        assert list(sample["prob_malignant"]) == sorted(sample["prob_malignant"], reverse=True)
        assert set(mine["threshold"]) <= {t}
        for kind in galleries.KINDS:
            assert list(mine.loc[mine["kind"] == kind, "rank"]) == list(
                range(1, int((mine["kind"] == kind).sum()) + 1))
    again = galleries.select_cases(predictions, k=k, threshold=thresholds, n_true_positives=3,
                                   seed=seed)
    pd.testing.assert_frame_equal(cases, again)


def test_selection_refuses_bad_arguments():
    predictions = random_predictions(3)
    with pytest.raises(UserError, match="integer >= 0"):
        galleries.select_cases(predictions, k=-1)
    with pytest.raises(UserError, match="must lie in"):
        galleries.select_cases(predictions, threshold=1.5)
    with pytest.raises(UserError, match="lack the column"):
        galleries.select_cases(predictions.drop(columns="label"))


@pytest.fixture()
def image_folder(tmp_path):
    """Three JPEGs, one of them not an image, one path outside the root."""
    rng = np.random.default_rng(0)
    names = ["test/Malignant/m_<1>.jpg", "test/Benign/b&1.jpg", "test/Benign/broken.jpg"]
    for name in names[:2]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / names[2]).write_bytes(b"not a jpeg")
    (tmp_path.parent / "outside.jpg").write_bytes((tmp_path / names[0]).read_bytes())
    return tmp_path, names


def test_thumbnails_skip_missing_broken_and_outside_files(image_folder):
    root, names = image_folder
    thumbs = galleries.load_thumbnails(names + ["../outside.jpg", "test/nope.jpg"], root, 120)
    assert set(thumbs) == set(names[:2])
    assert all(t.dtype == np.uint8 and t.shape == (120, 80, 3) for t in thumbs.values())


def cases_for(names):
    predictions = pd.DataFrame({"variant": "v<1>", "file": names[:3], "label": [1, 0, 0],
                                "prob_malignant": [0.1, 0.9, 0.8]})
    return galleries.select_cases(predictions, k=3)


def test_gallery_png_is_drawn_with_overlays(image_folder, tmp_path):
    root, names = image_folder
    cases = cases_for(names)
    thumbs = galleries.load_thumbnails(cases["file"], root)
    overlays = {"v<1>": galleries.overlays_for(thumbs, {names[0]: np.ones((4, 4)),
                                                        "not/shown.jpg": np.ones((4, 4))})}
    assert set(overlays["v<1>"]) == {names[0]}
    written = galleries.write_galleries(tmp_path / "out", cases, thumbs, overlays)
    assert [p.name for p, _ in written] == [f"gallery_{slug('v<1>')}.png"]  # collision-free name
    assert "1 false negatives, 2 false positives, 0 true positives, with Grad-CAM" in written[0][1]
    with Image.open(written[0][0]) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 400
    with pytest.raises(UserError, match="one variant"):
        galleries.gallery_figure(pd.concat([cases, cases.assign(variant="w")]), thumbs,
                                 tmp_path / "x.png")


def test_gallery_html_escapes_names_and_embeds_images(image_folder):
    root, names = image_folder
    cases = cases_for(names)
    thumbs = galleries.load_thumbnails(cases["file"], root)
    overlays = {"v<1>": {names[0]: 255 - thumbs[names[0]]}, "other": {names[1]: thumbs[names[1]]}}
    fragment = galleries.gallery_html(cases, thumbs, overlays)
    assert "m_<1>" not in fragment and "b&1" not in fragment and "<h3>v<1>" not in fragment
    assert "m_&lt;1&gt;.jpg" in fragment and "b&amp;1.jpg" in fragment
    assert "Benign, p=0.9000" in fragment and "Malignant, p=0.1000" in fragment
    assert fragment.count("image not available") == 1  # broken.jpg
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', fragment)
    assert len(uris) == 3  # two thumbnails and one overlay
    decoded = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert decoded.size == (thumbs[names[0]].shape[1], thumbs[names[0]].shape[0])
    assert fragment.count("<section") == fragment.count("</section>") == 1


def test_overlay():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    heat = rng.random((10, 8)).astype(np.float32)
    assert np.array_equal(galleries.overlay(image, heat, alpha=0.0), image)
    full = galleries.overlay(image, np.ones((50, 40)), alpha=1.0)
    assert full.dtype == np.uint8 and full.shape == (50, 40, 3)
    assert np.all(full == full[0, 0]) and full[0, 0, 0] > 100 and full[0, 0, 2] < 50  # jet(1)
    half = galleries.overlay(image, np.zeros((50, 40)), alpha=0.5)  # jet(0) = dark blue
    expected = 0.5 * image + 0.5 * np.array([0, 0, 127.5])
    assert np.abs(half.astype(float) - expected).max() <= 1.0
    mixed = galleries.overlay(image, heat)
    assert mixed.shape == image.shape and not np.array_equal(mixed, image)


def test_reporting_modules_never_import_tensorflow():
    code = ("import sys, melanoma.reporting.galleries, melanoma.reporting.localisation_figure; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))")
    subprocess.run([sys.executable, "-c", code], check=True)
