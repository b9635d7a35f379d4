"""Duplicate detection: SSIM against an independent implementation, alignment, planted copies."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from melanoma.evaluation import dedup, similarity
from melanoma.evaluation.dedup import TRANSFORMS, find_duplicate_pairs


def naive_ssim(a: np.ndarray, b: np.ndarray, data_range: float, sigma: float = 1.5) -> float:
    """SSIM written out window by window (Wang et al. 2004, Gaussian weights, population
    statistics), averaged over the pixels whose 11x11 window lies inside the image."""
    r = int(3.5 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    w1 = np.exp(-x ** 2 / (2 * sigma ** 2))
    w = np.outer(w1, w1) / w1.sum() ** 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(r, a.shape[0] - r):
        for j in range(r, a.shape[1] - r):
            pa, pb = a[i - r:i + r + 1, j - r:j + r + 1], b[i - r:i + r + 1, j - r:j + r + 1]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("seed", range(4))
def test_ssim_equals_window_by_window_definition(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(14, 30)), int(rng.integers(14, 30)))
    data_range = [255.0, 1.0][seed % 2]
    a = rng.random(shape) * data_range
    noisy = np.clip(a + rng.normal(0, 0.2 * data_range, shape), 0, data_range)
    b = noisy if seed < 2 else rng.random(shape) * data_range
    assert similarity.ssim(a, b, data_range) == pytest.approx(naive_ssim(a, b, data_range), abs=1e-10)


def test_ssim_equals_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(7)
    a = rng.random((40, 33)) * 255
    b = ndimage.gaussian_filter(a, 1.0) + rng.normal(0, 5, a.shape)
    ref = metrics.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    assert similarity.ssim(a, b) == pytest.approx(ref, abs=1e-10)


def test_matrix_blur_equals_gaussian_filter():
    x = np.random.default_rng(0).random((3, 21, 17))
    ref = ndimage.gaussian_filter(x, (0, 1.5, 1.5), truncate=3.5)
    np.testing.assert_allclose(similarity._blur(x, 1.5), ref, atol=1e-12)


def lesion(seed: int, size: int = 128) -> np.ndarray:
    """A synthetic dermoscopy-like RGB image: skin with fine texture and a dark blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.35, 0.65, 2)
    ry, rx = rng.uniform(0.12, 0.3, 2)
    blob = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** 2)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.2)
    texture /= texture.std()
    skin = np.array([225, 180, 160]) * (0.9 + 0.1 * rng.random(3))
    spot = np.array([110, 60, 40]) * (0.8 + 0.4 * rng.random(3))
    img = skin * (1 - blob[..., None]) + spot * blob[..., None] + 14 * texture[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def crop(img: np.ndarray, fy: float, fx: float, oy: float, ox: float) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = round(h * (1 - fy)), round(w * (1 - fx))
    y0, x0 = round(oy * (h - ch)), round(ox * (w - cw))
    part = Image.fromarray(img[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(part)


def rgb_transform(img: np.ndarray, name: str) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(TRANSFORMS[name](np.moveaxis(img, -1, 0)), 0, -1))


@pytest.fixture(scope="module")
def planted():
    """24 distinct images followed by copies of some of them; expected (i, j) pairs."""
    images = [lesion(s) for s in range(24)]
    resized = np.asarray(Image.fromarray(images[2]).resize((100, 100)).resize((128, 128)))
    copies = {
        "identical": (0, images[0].copy()),
        "jpeg70": (1, jpeg(images[1], 70)),
        "resize": (2, jpeg(resized, 95)),
        "crop": (3, jpeg(crop(images[3], 0.09, 0.06, 1.0, 0.2), 95)),
        "flip_lr": (4, jpeg(rgb_transform(images[4], "flip_lr"), 95)),
        "rot90": (5, jpeg(rgb_transform(images[5], "rot90"), 95)),
    }
    index = {}
    for name, (src, img) in copies.items():
        index[name] = (src, len(images))
        images.append(img)
    return images, index


def pairs_of(df) -> set[tuple[int, int]]:
    return set(zip(df["i"].tolist(), df["j"].tolist()))


def test_planted_copies_found_and_distinct_images_not_flagged(planted):
    images, index = planted
    df = find_duplicate_pairs(images, neighbours=3)
    assert pairs_of(df) == {v for k, v in index.items() if k not in ("flip_lr", "rot90")}
    kinds = dict(zip(zip(df["i"], df["j"]), df["kind"]))
    assert kinds[index["identical"]] == "identical"
    assert kinds[index["crop"]] == "near"
    assert (df["transform"] == "none").all()
    near = df[df["kind"] == "near"]
    assert (near["bandpass_corr"] >= dedup.MIN_CORR).all()


def test_flips_and_rotations_only_with_the_option(planted):
    images, index = planted
    df = find_duplicate_pairs(images, include_flips=True, neighbours=3)
    found = dict(zip(zip(df["i"], df["j"]), df["transform"]))
    assert found[index["flip_lr"]] == "flip_lr"
    assert found[index["rot90"]] == "rot90"
    assert set(found) == set(index.values())


def test_transform_maps_image_i_onto_image_j():
    base = lesion(40)
    images = [rgb_transform(base, "rot90"), lesion(41), lesion(42), base]
    df = find_duplicate_pairs(images, include_flips=True)
    assert pairs_of(df) == {(0, 3)}
    t = df["transform"].iloc[0]
    assert t == "rot270"
    np.testing.assert_array_equal(rgb_transform(images[0], t), images[3])


def test_inverse_transforms_undo():
    x = np.arange(2 * 5 * 5).reshape(2, 5, 5)
    for name, fn in TRANSFORMS.items():
        np.testing.assert_array_equal(TRANSFORMS[dedup.INVERSE.get(name, name)](fn(x)), x)


def test_alignment_recovers_a_known_crop():
    img = lesion(3, size=256)
    fy, fx, oy, ox = 0.1, 0.06, 1.0, 0.25
    copy = crop(img, fy, fx, oy, ox)
    a = np.stack([dedup._grey(img)]).astype(np.float32)
    b = np.stack([dedup._grey(copy)]).astype(np.float32)
    p = similarity.align_scale_shift(a, b)[0]
    ch, cw = round(256 * (1 - fy)), round(256 * (1 - fx))
    cy = (round(oy * (256 - ch)) + ch / 2) / 128 - 1  # crop centre, normalised
    cx = (round(ox * (256 - cw)) + cw / 2) / 128 - 1
    expected = [256 / ch, 256 / cw, -cy * 256 / ch, -cx * 256 / cw]
    np.testing.assert_allclose(p, expected, atol=0.02)
    s, corr, overlap = similarity.match_pairs(a, b, p[None])
    assert corr[0] > 0.95 and s[0] > 0.9 and overlap[0] > 0.5


def test_identical_images_score_one():
    g = dedup._grey(lesion(0)).astype(np.float32)[None]
    s, corr, overlap = similarity.match_pairs(g, g)
    assert s[0] == pytest.approx(1.0, abs=1e-5) and corr[0] == pytest.approx(1.0, abs=1e-5)
    assert overlap[0] == pytest.approx(((64 - 10) / 64) ** 2)


def test_loader_callable_and_unreadable_images(planted):
    images, index = planted
    load = lambda k: None if k == 2 else images[k]
    df = find_duplicate_pairs(load, n_images=len(images))
    assert df.attrs["unreadable"] == [2]
    assert all(2 not in pair for pair in pairs_of(df))
    assert index["jpeg70"] in pairs_of(df)


def test_block_size_does_not_change_candidates(planted):
    images, index = planted
    images = images[:index["identical"][1]] + images[index["identical"][1] + 1:]  # no exact ties
    sig = dedup.compute_signatures(images, chunk=5, workers=2)
    a = dedup.candidate_pairs(sig, include_flips=True, block=7)
    b = dedup.candidate_pairs(sig, include_flips=True, block=256)
    assert a[["i", "j", "transform"]].equals(b[["i", "j", "transform"]])
    np.testing.assert_allclose(a["thumb_corr"], b["thumb_corr"], atol=1e-6)
    assert len(a) <= len(images) * dedup.NEIGHBOURS


def test_rejects_images_that_are_not_uint8():
    with pytest.raises(ValueError, match="uint8"):
        find_duplicate_pairs([np.zeros((8, 8, 3), dtype=np.float32)])


def test_files_and_unreadable_files(tmp_path, planted):
    images, index = planted
    src, copy = index["crop"]
    paths = []
    for k in (src, copy, 7, 8):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(images[k]).save(paths[-1])
    paths.append(tmp_path / "broken.jpg")
    paths[-1].write_bytes(b"not an image")
    df = dedup.find_duplicate_files(paths)
    assert df[["file_a", "file_b"]].values.tolist() == [[str(paths[0]), str(paths[1])]]
    assert df.attrs["unreadable_files"] == [str(paths[-1])]
