"""Tests for melanoma.evaluation.audit: planted duplicates in a small synthetic data set, found
by the dermoscopy detector (melanoma.evaluation.dedup), and lesion groups from a manifest."""

from __future__ import annotations

import itertools
import json
import pathlib
import shutil
import types

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data import layout
from melanoma.evaluation import audit, dedup, similarity
from melanoma.evaluation.audit import (
    PAIR_COLUMNS,
    AuditItem,
    clean_test_files,
    content_hash,
    find_duplicates,
    is_readable,
    read_pairs,
    summarise,
)
from melanoma.reporting.audit_figures import write_audit

MIN_CORR = 0.95  # the detector's default, evaluation.audit_min_corr
FAR = 0.8  # unrelated images stay below this band-pass correlation (a margin under MIN_CORR)


# --------------------------------------------------------------------------
# synthetic images


def blob_image(rng: np.random.Generator, size: int = 300, grid: int = 12) -> Image.Image:
    """Smooth random RGB image: low-res uniform noise upsampled (bicubic)."""
    small = (rng.random((grid, grid, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def save_jpeg(img: Image.Image, path: pathlib.Path, quality: int = 95) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=quality)
    return path


def load(path: pathlib.Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def noisy(img: Image.Image, seed: int, sigma: float = 12.0) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    arr = arr + np.random.default_rng(seed).normal(0.0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_originals(root: pathlib.Path, seed: int = 0) -> list[pathlib.Path]:
    """Distinct images: train 4+4, val 1+2, test 4+4 (Benign + Malignant)."""
    rng = np.random.default_rng(seed)
    layout = {
        ("train", "Benign"): ["tb0", "tb1", "tb2", "tb3"],
        ("train", "Malignant"): ["tm0", "tm1", "tm2", "tm3"],
        ("val", "Benign"): ["vb0"],
        ("val", "Malignant"): ["vm0", "vm1"],
        ("test", "Benign"): ["sb0", "sb1", "sb2", "sb3"],
        ("test", "Malignant"): ["sm0", "sm1", "sm2", "sm3"],
    }
    paths = []
    for (split, cls), names in layout.items():
        for name in names:
            paths.append(save_jpeg(blob_image(rng), root / split / cls / f"{name}.jpg"))
    return paths


def folder_items(root: pathlib.Path) -> list[AuditItem]:
    """Items of ROOT/{train,val,test}/{Benign,Malignant}: planted val images need a val folder,
    so each split folder is read with the layout module's class-folder reader."""
    return audit.items_from_splits(*((found.files, found.labels) for found in (
        layout.read_class_folders(root / split) for split in ("train", "val", "test"))))


def pair_scores(path_a, path_b, transform: str = "none") -> tuple[float, float]:
    """(band-pass correlation, ssim) of two files as the detector confirms a pair: 64x64
    greyscale, ``transform`` applied to the first, aligned, compared over the overlap."""
    sig = dedup.compute_signatures(dedup.file_loader([path_a, path_b]), 2, workers=1)
    a = dedup.TRANSFORMS[transform](sig.gray[0])[None].astype(np.float32)
    ssim, corr, _ = similarity.match_pairs(a, sig.gray[1][None].astype(np.float32))
    return float(corr[0]), float(ssim[0])


def rel(path: str, root: pathlib.Path) -> str:
    return pathlib.Path(path).relative_to(root).as_posix()


def pair_set(pairs: pd.DataFrame, root: pathlib.Path) -> set[tuple]:
    return {
        (rel(r.file_a, root), rel(r.file_b, root), r.kind, bool(r.cross_split), bool(r.label_conflict))
        for r in pairs.itertuples(index=False)
    }


# Pairs planted by `leaky` (file_a, file_b, kind, cross_split, label_conflict).
EXPECTED = {
    ("train/Benign/tb0.jpg", "test/Benign/exact_tb0.jpg", "exact", True, False),
    ("train/Malignant/tm0.jpg", "test/Malignant/reenc_tm0.jpg", "near", True, False),
    ("train/Benign/tb1.jpg", "test/Benign/resized_tb1.jpg", "near", True, False),
    ("train/Benign/tb2.jpg", "test/Malignant/conflict_tb2.jpg", "exact", True, True),
    ("train/Malignant/tm2.jpg", "val/Malignant/reenc_tm2.jpg", "near", True, False),
    ("train/Benign/dup_tb3.jpg", "train/Benign/tb3.jpg", "near", False, False),
    ("val/Benign/vb0.jpg", "test/Benign/exact_vb0.jpg", "exact", True, False),
    ("test/Benign/sb0.jpg", "test/Malignant/dup_sb0.jpg", "near", False, True),
}
MIRROR_PAIR = ("train/Malignant/tm1.jpg", "test/Malignant/mirror_tm1.jpg", "near", True, False)
CONTAMINATED_TEST = {  # test images with a duplicate in train or val
    "test/Benign/exact_tb0.jpg",
    "test/Malignant/reenc_tm0.jpg",
    "test/Benign/resized_tb1.jpg",
    "test/Malignant/conflict_tb2.jpg",
    "test/Benign/exact_vb0.jpg",
}
UNREADABLE = {"test/Benign/corrupt.jpg", "train/Malignant/empty.jpg", "test/Malignant/truncated.jpg"}


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """Synthetic data set with planted duplicates and unreadable files."""
    root = tmp_path_factory.mktemp("leaky")
    originals = make_originals(root)

    # sanity: unrelated images score far below the threshold with the real detector
    sig = dedup.compute_signatures(dedup.file_loader(originals), len(originals), workers=1)
    ia, ib = map(list, zip(*itertools.combinations(range(len(originals)), 2)))
    _, corr, _ = similarity.match_pairs(sig.gray[ia].astype(np.float32), sig.gray[ib].astype(np.float32))
    assert corr.max() < FAR

    def src(name: str) -> pathlib.Path:
        return next(p for p in originals if p.stem == name)

    def dst(relpath: str) -> pathlib.Path:
        p = root / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    shutil.copyfile(src("tb0"), dst("test/Benign/exact_tb0.jpg"))  # exact byte copy
    save_jpeg(load(src("tm0")), dst("test/Malignant/reenc_tm0.jpg"), quality=60)  # re-encoded
    small = load(src("tb1")).resize((200, 200), Image.Resampling.LANCZOS)
    save_jpeg(small, dst("test/Benign/resized_tb1.jpg"))  # resized 300 -> 200
    mirrored = load(src("tm1")).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    save_jpeg(mirrored, dst("test/Malignant/mirror_tm1.jpg"))  # mirrored
    shutil.copyfile(src("tb2"), dst("test/Malignant/conflict_tb2.jpg"))  # other class
    save_jpeg(load(src("tm2")), dst("val/Malignant/reenc_tm2.jpg"), quality=60)  # train->val
    save_jpeg(noisy(load(src("tb3")), 1), dst("train/Benign/dup_tb3.jpg"), quality=60)  # within train
    shutil.copyfile(src("vb0"), dst("test/Benign/exact_vb0.jpg"))  # val->test
    save_jpeg(noisy(load(src("sb0")), 2), dst("test/Malignant/dup_sb0.jpg"), quality=70)  # within test

    # unreadable files
    dst("test/Benign/corrupt.jpg").write_bytes(np.random.default_rng(5).bytes(2000))
    dst("train/Malignant/empty.jpg").write_bytes(b"")
    data = src("sm0").read_bytes()
    dst("test/Malignant/truncated.jpg").write_bytes(data[: len(data) // 2])

    items = folder_items(root)
    pairs = find_duplicates(items, min_corr=MIN_CORR)
    return types.SimpleNamespace(root=root, items=items, pairs=pairs, originals=originals)


# --------------------------------------------------------------------------
# file checks and signatures


def test_content_hash_and_readability(leaky):
    root = leaky.root
    assert content_hash(root / "train/Benign/tb0.jpg") == content_hash(root / "test/Benign/exact_tb0.jpg")
    assert content_hash(root / "train/Malignant/tm0.jpg") != content_hash(root / "test/Malignant/reenc_tm0.jpg")
    assert content_hash(root / "does/not/exist.jpg") is None
    assert is_readable(root / "train/Benign/tb0.jpg")
    assert not is_readable(root / "does/not/exist.jpg")


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_are_not_readable(leaky, name):
    assert not is_readable(leaky.root / name)
    assert dedup.file_loader([leaky.root / name])(0) is None


def test_signatures_count_unreadable(leaky):
    sig = audit.signatures_of(leaky.items, workers=2)
    bad = {rel(str(leaky.items[k].path), leaky.root) for k in sig.unreadable}
    assert bad == UNREADABLE
    assert sig.gray.shape == (len(leaky.items), dedup.SIZE, dedup.SIZE)
    assert sum(d is not None for d in sig.digests) == len(leaky.items) - len(UNREADABLE)


def test_scores_are_the_detectors(leaky):
    """Each pair's scores are the detector's own (find_duplicate_files on the same files),
    whichever way the audit orients the pair."""
    paths = [str(it.path) for it in leaky.items]
    direct = dedup.find_duplicate_files(paths, min_corr=MIN_CORR)
    want = {frozenset((a, b)): (c, m) for a, b, c, m in
            zip(direct["file_a"], direct["file_b"], direct["bandpass_corr"], direct["ssim"])}
    got = {frozenset((a, b)): (c, m) for a, b, c, m in zip(
        leaky.pairs["file_a"], leaky.pairs["file_b"], leaky.pairs["bandpass_corr"], leaky.pairs["ssim"])}
    assert got == want


# --------------------------------------------------------------------------
# planted duplicates


def test_finds_exactly_the_planted_pairs(leaky):
    pairs = leaky.pairs
    assert list(pairs.columns) == list(PAIR_COLUMNS)
    assert pair_set(pairs, leaky.root) == EXPECTED
    exact = pairs[pairs["kind"] == "exact"]
    assert (exact["bandpass_corr"] == 1.0).all() and (exact["ssim"] == 1.0).all()
    assert pairs["bandpass_corr"].between(MIN_CORR, 1.0).all()
    assert pairs["ssim"].between(0.0, 1.0).all()
    assert (pairs["transform"] == "none").all() and (pairs["group"] == "").all()
    # labels come from the folders
    row = pairs[pairs["file_b"].str.endswith("conflict_tb2.jpg")].iloc[0]
    assert (row.label_a, row.label_b, row.split_a, row.split_b) == (0, 1, "train", "test")
    # cross-split pairs are listed first
    assert pairs["cross_split"].tolist() == sorted(pairs["cross_split"].tolist(), reverse=True)


def test_mirrored_copy_is_not_a_duplicate_by_default(leaky):
    """Pinned decision: flips are NOT duplicates unless include_flips=True."""
    a, b = leaky.root / "train/Malignant/tm1.jpg", leaky.root / "test/Malignant/mirror_tm1.jpg"
    assert pair_scores(a, b)[0] < FAR  # unflipped, the detector does not see it
    assert pair_scores(a, b, "flip_lr")[0] >= MIN_CORR
    assert MIRROR_PAIR not in pair_set(leaky.pairs, leaky.root)
    assert leaky.pairs.attrs["include_flips"] is False


def test_include_flips_finds_the_mirrored_copy(leaky):
    pairs = find_duplicates(leaky.items, MIN_CORR, include_flips=True)
    assert pair_set(pairs, leaky.root) == EXPECTED | {MIRROR_PAIR}
    row = pairs[pairs["file_b"].str.endswith("mirror_tm1.jpg")].iloc[0]
    assert row["transform"] == "flip_lr"
    assert row.bandpass_corr >= 0.98
    assert (pairs.loc[~pairs["file_b"].str.endswith("mirror_tm1.jpg"), "transform"] == "none").all()
    assert pairs.attrs["include_flips"] is True


@pytest.mark.parametrize("transform", [t for t in dedup.TRANSFORM_NAMES if t != "none"])
def test_include_flips_names_the_transform(tmp_path, transform):
    """Flips and 90-degree rotations; ``transform`` maps file_a (the train image) onto file_b,
    whichever file the detector saw first (rot90 and rot270 are each other's inverse)."""
    img = blob_image(np.random.default_rng(11))
    a = save_jpeg(img, tmp_path / "a.jpg")
    b = save_jpeg(Image.fromarray(np.ascontiguousarray(
        dedup.TRANSFORMS[transform](np.asarray(img).transpose(2, 0, 1)).transpose(1, 2, 0))),
        tmp_path / "b.jpg")
    items = [AuditItem(a, "train", 0), AuditItem(b, "test", 0)]
    assert find_duplicates(items, MIN_CORR).empty
    for order in (items, items[::-1]):
        pairs = find_duplicates(order, MIN_CORR, include_flips=True)
        assert len(pairs) == 1 and pairs.iloc[0]["transform"] == transform
        assert pairs.iloc[0]["file_a"] == str(a)


def test_min_corr_is_the_threshold(leaky):
    """A near pair is flagged exactly when its band-pass correlation reaches min_corr: just
    above the weakest planted pair's score it goes, and min_corr=1 keeps identical pixels."""
    near = leaky.pairs[leaky.pairs["kind"] == "near"]
    weakest = near.loc[near["bandpass_corr"].idxmin()]
    stricter = find_duplicates(leaky.items, float(np.nextafter(weakest.bandpass_corr, 2)))
    assert pair_set(stricter, leaky.root) == pair_set(leaky.pairs, leaky.root) - {
        (rel(weakest.file_a, leaky.root), rel(weakest.file_b, leaky.root), "near",
         bool(weakest.cross_split), bool(weakest.label_conflict))}
    only_identical = find_duplicates(leaky.items, 1.0)
    assert set(only_identical["kind"]) == {"exact"}
    assert pair_set(only_identical, leaky.root) == {e for e in EXPECTED if e[2] == "exact"}
    with pytest.raises(ValueError, match="min_corr"):
        find_duplicates(leaky.items, 0.0)


def test_unreadable_files_are_skipped_and_listed(leaky):
    pairs = leaky.pairs
    bad = {rel(p, leaky.root) for p in pairs.attrs["unreadable"]}
    assert bad == UNREADABLE
    listed = set(pairs["file_a"]) | set(pairs["file_b"])
    assert not bad & {rel(p, leaky.root) for p in listed}


def test_summary_numbers(leaky):
    s = summarise(leaky.pairs, leaky.items)
    assert s["n_items"] == len(leaky.items) == 31
    assert s["n_by_split"] == {"train": 10, "val": 4, "test": 17}
    assert s["n_unreadable"] == 3
    assert {rel(p, leaky.root) for p in s["unreadable_files"]} == UNREADABLE
    assert s["pairs_total"] == len(EXPECTED)
    assert s["pairs_by_split"] == {
        "train-train": {"exact": 0, "near": 1, "same_lesion": 0},
        "train-val": {"exact": 0, "near": 1, "same_lesion": 0},
        "train-test": {"exact": 2, "near": 2, "same_lesion": 0},
        "val-test": {"exact": 1, "near": 0, "same_lesion": 0},
        "test-test": {"exact": 0, "near": 1, "same_lesion": 0},
    }
    assert s["cross_split_pairs"] == 6
    assert s["label_conflict_pairs"] == 2
    assert s["label_conflict_cross_split_pairs"] == 1
    assert s["n_test"] == 15  # readable test images
    assert s["test_with_duplicate_in_train"] == 4
    assert s["test_with_exact_duplicate_in_train"] == 2
    assert s["test_with_duplicate_in_val"] == 1
    assert s["test_with_duplicate_in_train_or_val"] == 5
    assert s["test_fraction_affected"] == pytest.approx(5 / 15, abs=1e-6)
    assert s["n_test_clean"] == 10
    assert s["test_with_same_lesion_in_train_or_val"] == 0
    assert s["min_corr"] == MIN_CORR and s["include_flips"] is False and s["n_grouped"] == 0
    json.dumps(s)  # JSON-ready


def test_clean_test_files(leaky):
    clean = clean_test_files(leaky.pairs, leaky.items)
    assert clean == clean_test_files(leaky.pairs)  # universe from attrs
    clean_rel = {rel(p, leaky.root) for p in clean}
    test_rel = {rel(str(it.path), leaky.root) for it in leaky.items if it.split == "test"}
    assert clean_rel == test_rel - CONTAMINATED_TEST - UNREADABLE
    assert len(clean_rel) == 10
    # by default the mirrored copy counts as clean; test-test duplicates stay clean
    assert {"test/Malignant/mirror_tm1.jpg", "test/Benign/sb0.jpg", "test/Malignant/dup_sb0.jpg"} <= clean_rel
    with pytest.raises(ValueError):
        clean_test_files(read_pairs_frame_without_attrs(leaky.pairs))


def read_pairs_frame_without_attrs(pairs: pd.DataFrame) -> pd.DataFrame:
    out = pairs.copy()
    out.attrs.clear()
    return out


def test_write_audit_outputs_round_trip(leaky, tmp_path):
    summary = summarise(leaky.pairs, leaky.items)
    out = tmp_path / "audit"
    paths = write_audit(leaky.pairs, summary, out, max_grid=4)
    assert sorted(p.name for p in out.iterdir()) == ["audit_pairs.csv", "audit_pairs.png", "audit_summary.json"]
    back = read_pairs(paths["csv"])
    pd.testing.assert_frame_equal(back, leaky.pairs[list(PAIR_COLUMNS)], check_like=False)
    plain = pd.read_csv(paths["csv"])
    assert len(plain) == len(leaky.pairs) and plain["cross_split"].dtype == bool
    assert json.loads(paths["json"].read_text()) == summary
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.size[0] > 300
    # rewrite in place: still exactly three files (no temp leftovers)
    write_audit(leaky.pairs, summary, out)
    assert len(list(out.iterdir())) == 3
    # summary recomputed from the CSV (no attrs) agrees, re-checking unreadables
    again = summarise(back, leaky.items)
    for key, value in again.items():
        assert summary[key] == value, key


def test_clean_data_set_has_no_pairs(tmp_path):
    root = tmp_path / "clean"
    make_originals(root, seed=7)
    # items may be any object with .path/.split/.label
    items = [types.SimpleNamespace(path=it.path, split=it.split, label=it.label) for it in folder_items(root)]
    assert len(items) == 19
    pairs = find_duplicates(items, MIN_CORR)
    assert pairs.empty and list(pairs.columns) == list(PAIR_COLUMNS)
    assert find_duplicates(items, MIN_CORR, include_flips=True).empty
    s = summarise(pairs, items)
    assert s["pairs_total"] == 0 and s["pairs_by_split"] == {}
    assert s["test_with_duplicate_in_train_or_val"] == 0 and s["test_fraction_affected"] == 0.0
    assert s["n_unreadable"] == 0 and s["n_test"] == s["n_test_clean"] == 8
    assert clean_test_files(pairs, items) == {str(it.path) for it in items if it.split == "test"}
    paths = write_audit(pairs, s, tmp_path / "out")
    assert read_pairs(paths["csv"]).empty
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG"


def test_no_pairs_png_is_written_for_empty_input(tmp_path):
    pairs = find_duplicates([], MIN_CORR)
    s = summarise(pairs, [])
    assert s["n_test"] == 0 and s["test_fraction_affected"] == 0.0
    paths = write_audit(pairs, s, tmp_path)
    assert all(p.exists() for p in paths.values())


def test_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        find_duplicates([AuditItem(tmp_path / "x.jpg", "holdout", 0)], MIN_CORR)


def test_pairs_are_oriented_train_val_test(tmp_path):
    img = blob_image(np.random.default_rng(4))
    a = save_jpeg(img, tmp_path / "a.jpg")  # path sorts first but is the test copy
    b = save_jpeg(img, tmp_path / "b.jpg", quality=80)
    pairs = find_duplicates([AuditItem(a, "test", 1), AuditItem(b, "val", 0)], MIN_CORR)
    row = pairs.iloc[0]
    assert (row.split_a, row.split_b, row.label_a, row.label_b) == ("val", "test", 0, 1)
    assert row.kind == "near" and row.cross_split and row.label_conflict
    assert clean_test_files(pairs) == set()


def test_exact_copies_group(tmp_path):
    """k identical files -> k*(k-1)/2 exact pairs."""
    img = blob_image(np.random.default_rng(9))
    src = save_jpeg(img, tmp_path / "a.jpg")
    for name in "bcd":
        shutil.copyfile(src, tmp_path / f"{name}.jpg")
    items = [AuditItem(tmp_path / f"{n}.jpg", s, 0) for n, s in zip("abcd", ["train", "train", "val", "test"])]
    pairs = find_duplicates(items, MIN_CORR)
    assert len(pairs) == 6 and (pairs["kind"] == "exact").all()
    assert summarise(pairs, items)["test_with_duplicate_in_train"] == 1


def test_items_from_layout_uses_the_runners_split(leaky):
    """`audit DATA_DIR` finds files with layout.discover and splits train/ like the runner:
    split_train_val over the readable training images (unreadable ones skipped first)."""
    from melanoma.data.decode import load_images
    from melanoma.data.splits import split_train_val

    found = layout.discover(leaky.root)  # train/ and test/ only; the val/ folder is not a split
    items, sig = audit.items_from_layout(found, val_fraction=0.3, seed=5)
    assert [str(it.path) for it in items] == [str(f) for f in found.train.files + found.test.files]
    loaded = load_images(found.train.files, found.train.labels, 32)  # what the runner decodes
    _, val_index = split_train_val(loaded.labels, 0.3, 5)
    want_val = {str(loaded.files[i]) for i in val_index}
    assert {str(it.path) for it in items if it.split == "val"} == want_val
    assert len(want_val) >= 2
    pairs = find_duplicates(items, MIN_CORR, signatures=sig)
    got = {(rel(r.file_a, leaky.root), rel(r.file_b, leaky.root)) for r in pairs.itertuples()}
    assert ("train/Benign/tb0.jpg", "test/Benign/exact_tb0.jpg") in got  # train or val side


# --------------------------------------------------------------------------
# lesion / patient groups from an importer's manifest.csv


def write_manifest(root: pathlib.Path, groups: dict[str, str]) -> None:
    rows = ["file,source_file,split,label,diagnosis,label_source,group_id"]
    for path in sorted(root.rglob("*.jpg")):
        name = path.relative_to(root).as_posix()
        rows.append(f"{name},/src/{path.name},{name.split('/')[0]},{name.split('/')[1]},nevus,"
                    f"meta.csv:2,{groups.get(name, '')}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    """Distinct images, some of one lesion: L1 train/test, L2 both in train, L3 a re-encoded
    copy across train/test, L4 train/val (the run's split of train/), L5 with an unreadable file."""
    root = tmp_path_factory.mktemp("lesions")
    rng = np.random.default_rng(21)
    names = ["train/Benign/l1a", "test/Benign/l1b", "train/Benign/l2a", "train/Benign/l2b",
             "train/Malignant/l3a", "train/Benign/l4a", "train/Benign/l4b", "train/Benign/l5a",
             "train/Benign/u1", "test/Malignant/u2"]
    for name in names:
        save_jpeg(blob_image(rng, size=96), root / f"{name}.jpg")
    save_jpeg(load(root / "train/Malignant/l3a.jpg"), root / "test/Malignant/l3b.jpg", quality=60)
    (root / "test/Benign/l5b.jpg").write_bytes(b"not an image")
    groups = {"train/Benign/l1a.jpg": "L1", "test/Benign/l1b.jpg": "L1", "train/Benign/l2a.jpg": "L2",
              "train/Benign/l2b.jpg": "L2", "train/Malignant/l3a.jpg": "L3",
              "test/Malignant/l3b.jpg": "L3", "train/Benign/l4a.jpg": "L4",
              "train/Benign/l4b.jpg": "L4", "train/Benign/l5a.jpg": "L5", "test/Benign/l5b.jpg": "L5"}
    write_manifest(root, groups)
    items = [AuditItem(p, "val" if p.stem == "l4b" else p.relative_to(root).parts[0],
                       int(p.parent.name == "Malignant")) for p in sorted(root.rglob("*.jpg"))]
    return types.SimpleNamespace(root=root, items=items)


def test_read_groups_from_an_importer_manifest(lesions, tmp_path):
    groups = audit.read_groups(lesions.root)
    assert groups["test/Benign/l1b.jpg"] == "L1" and "train/Benign/u1.jpg" not in groups
    assert len(groups) == 10
    assert audit.read_groups(tmp_path) == {}  # no manifest
    (tmp_path / "manifest.csv").write_text("split,class,image_id\ntrain,Benign,ISIC_0000000\n")
    assert audit.read_groups(tmp_path) == {}  # another kind of manifest (no file/group_id)
    mapped = audit.groups_for(lesions.items, lesions.root)
    assert {rel(k, lesions.root): v for k, v in mapped.items()} == groups


def test_same_lesion_pairs_across_splits(lesions):
    groups = audit.groups_for(lesions.items, lesions.root)
    pairs = find_duplicates(lesions.items, MIN_CORR, groups=groups)
    got = {(rel(r.file_a, lesions.root), rel(r.file_b, lesions.root), r.kind, r.group)
           for r in pairs.itertuples()}
    assert got == {
        ("train/Benign/l1a.jpg", "test/Benign/l1b.jpg", "same_lesion", "L1"),
        ("train/Malignant/l3a.jpg", "test/Malignant/l3b.jpg", "near", "L3"),  # the detector's kind wins
        ("train/Benign/l4a.jpg", "train/Benign/l4b.jpg", "same_lesion", "L4"),  # l4b: split val
    }
    lesion = pairs[pairs["kind"] == "same_lesion"]
    assert lesion["bandpass_corr"].isna().all() and lesion["ssim"].isna().all()
    assert lesion["cross_split"].all() and (lesion["transform"] == "none").all()
    assert pairs.attrs["n_grouped"] == 10
    # without the groups only the copy is found
    assert set(find_duplicates(lesions.items, MIN_CORR)["kind"]) == {"near"}


def test_same_lesion_test_images_are_not_clean(lesions, tmp_path):
    pairs = find_duplicates(lesions.items, MIN_CORR, groups=audit.groups_for(lesions.items, lesions.root))
    s = summarise(pairs, lesions.items)
    assert s["pairs_by_split"] == {"train-val": {"exact": 0, "near": 0, "same_lesion": 1},
                                   "train-test": {"exact": 0, "near": 1, "same_lesion": 1}}
    assert s["test_with_duplicate_in_train_or_val"] == 1  # l3b
    assert s["test_with_same_lesion_in_train_or_val"] == 1  # l1b
    assert s["n_test"] == 3 and s["n_unreadable"] == 1
    assert s["n_test_clean"] == 1 and s["test_fraction_affected"] == pytest.approx(2 / 3, abs=1e-6)
    clean = {rel(p, lesions.root) for p in clean_test_files(pairs, lesions.items)}
    assert clean == {"test/Malignant/u2.jpg"}
    # the NaN scores survive the CSV, and the summary recomputed from it agrees
    paths = write_audit(pairs, s, tmp_path / "out")
    back = read_pairs(paths["csv"])
    pd.testing.assert_frame_equal(back, pairs[list(PAIR_COLUMNS)])
    assert summarise(back, lesions.items) == {k: v for k, v in s.items() if k not in
                                              ("min_corr", "include_flips", "n_grouped")}


def test_audit_command_reads_an_imported_manifest(tmp_path, capsys):
    """import (HAM10000-style, several images per lesion) -> audit: the run's train/val split
    is not grouped, so lesions straddle train and val and are reported; the importer's grouped
    test split shares no lesion with train."""
    from melanoma.cli.main import main
    from melanoma.data.importers import import_dataset

    rng = np.random.default_rng(3)
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for k in range(24):
        for m in range(2):
            image_id = f"ISIC_{k * 2 + m:07d}"
            save_jpeg(blob_image(rng, size=64), tmp_path / "images" / f"{image_id}.jpg")
            lines.append(f"HAM_{k:07d},{image_id},{'mel' if k % 3 == 0 else 'nv'},histo,50,male,back")
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    import_dataset("auto", tmp_path / "meta.csv", tmp_path / "images", tmp_path / "ham",
                   test_fraction=0.25, seed=1)
    assert main(["audit", str(tmp_path / "ham"), "--out", str(tmp_path / "audit"),
                 "--set", "data.val_fraction=0.3"]) == 0
    summary = json.loads((tmp_path / "audit" / "audit_summary.json").read_text())
    pairs = read_pairs(tmp_path / "audit" / "audit_pairs.csv")
    assert summary["n_grouped"] == 48
    assert set(pairs["kind"]) == {"same_lesion"}
    assert set(zip(pairs["split_a"], pairs["split_b"])) == {("train", "val")}
    assert summary["pairs_by_split"]["train-val"]["same_lesion"] == len(pairs) >= 1
    assert summary["test_with_same_lesion_in_train_or_val"] == 0
    assert summary["n_test_clean"] == summary["n_test"] == 12
    assert '"test_with_same_lesion_in_train_or_val": 0' in capsys.readouterr().out


def test_audit_settings_in_config_and_command(leaky, tmp_path, capsys):
    from melanoma import config
    from melanoma.cli.main import main
    from melanoma.util.errors import UserError

    ev = config.load("default").evaluation
    assert (ev.audit_min_corr, ev.audit_include_flips) == (0.95, False)
    assert config.load("default", ["evaluation.audit_min_corr=0.9"]).evaluation.audit_min_corr == 0.9
    for bad in ("0", "1.5"):
        with pytest.raises(UserError, match="audit_min_corr must be in"):
            config.load("default", [f"evaluation.audit_min_corr={bad}"])
    with pytest.raises(UserError, match="audit_max_distance"):
        config.load("default", ["evaluation.audit_max_distance=12"])  # the hash's setting is gone
    assert main(["audit", str(leaky.root), "--min-corr", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert "--min-corr must be in (0, 1]" in capsys.readouterr().err
    out = tmp_path / "flips"
    assert main(["audit", str(leaky.root), "--include-flips", "--out", str(out)]) == 0
    summary = json.loads((out / "audit_summary.json").read_text())
    assert summary["include_flips"] is True and summary["min_corr"] == 0.95
    pairs = read_pairs(out / "audit_pairs.csv")
    assert (pairs["file_b"].str.endswith("mirror_tm1.jpg") & (pairs["transform"] == "flip_lr")).any()
    assert main(["audit", str(leaky.root), "--set", "evaluation.audit_min_corr=1.0",
                 "--out", str(tmp_path / "strict")]) == 0
    assert set(read_pairs(tmp_path / "strict" / "audit_pairs.csv")["kind"]) == {"exact"}
