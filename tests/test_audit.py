"""Tests for melanoma.evaluation.audit: planted duplicates in a small synthetic data set."""

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
from melanoma.evaluation import audit
from melanoma.evaluation.audit import (
    PAIR_COLUMNS,
    AuditItem,
    average_hash,
    clean_test_files,
    content_hash,
    difference_hash,
    find_duplicates,
    hamming_pairs,
    read_pairs,
    summarise,
)
from melanoma.evaluation.audit import hashing as audit_hashing
from melanoma.reporting.audit_figures import write_audit

MAX_D = 12


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

    # sanity: unrelated images are far apart with the real hash
    hashes = [average_hash(p) for p in originals]
    dists = [int((a != b).sum()) for a, b in itertools.combinations(hashes, 2)]
    assert min(dists) > 2 * MAX_D

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
    pairs = find_duplicates(items, max_distance=MAX_D)
    return types.SimpleNamespace(root=root, items=items, pairs=pairs, originals=originals)


# --------------------------------------------------------------------------
# hashes


def test_hash_functions(leaky):
    root = leaky.root
    h = average_hash(root / "train/Benign/tb0.jpg")
    assert h.dtype == bool and h.shape == (256,)
    assert 0 < h.sum() < 256
    assert average_hash(root / "train/Benign/tb0.jpg", size=8).shape == (64,)
    d = difference_hash(root / "train/Benign/tb0.jpg")
    assert d.dtype == bool and d.shape == (256,)
    assert content_hash(root / "train/Benign/tb0.jpg") == content_hash(root / "test/Benign/exact_tb0.jpg")
    assert content_hash(root / "train/Malignant/tm0.jpg") != content_hash(root / "test/Malignant/reenc_tm0.jpg")
    assert content_hash(root / "does/not/exist.jpg") is None


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_hash_to_none(leaky, name):
    assert average_hash(leaky.root / name) is None
    assert difference_hash(leaky.root / name) is None


def test_hash_items_counts_unreadable(leaky):
    table = audit.hash_items(leaky.items, workers=2)
    bad = {rel(str(leaky.items[k].path), leaky.root) for k in table.unreadable}
    assert bad == UNREADABLE
    assert len(table.index) == len(leaky.items) - len(UNREADABLE)
    assert table.bits.shape == (len(table.index), 1, 256)


@pytest.mark.parametrize("block_size", [3, 7, 1024])
def test_hamming_pairs_matches_brute_force(block_size):
    rng = np.random.default_rng(3)
    bits = rng.random((40, 64)) < 0.5
    for k in range(0, 40, 5):  # plant near copies with 0..4 flipped bits
        bits[k + 1] = bits[k]
        bits[k + 1, rng.choice(64, size=k // 10, replace=False)] ^= True
    max_d = 20
    i, j, d = hamming_pairs(bits, max_d, block_size=block_size)
    got = {(a, b, c) for a, b, c in zip(i.tolist(), j.tolist(), d.tolist())}
    want = set()
    for a, b in itertools.combinations(range(len(bits)), 2):
        dist = int((bits[a] != bits[b]).sum())
        if dist <= max_d:
            want.add((a, b, dist))
    assert got == want
    assert len(want) >= 8  # the planted ones at least


def test_hamming_pairs_empty():
    i, j, d = hamming_pairs(np.zeros((0, 256), dtype=bool), MAX_D)
    assert len(i) == len(j) == len(d) == 0


# --------------------------------------------------------------------------
# planted duplicates


def test_finds_exactly_the_planted_pairs(leaky):
    pairs = leaky.pairs
    assert list(pairs.columns) == list(PAIR_COLUMNS)
    assert pair_set(pairs, leaky.root) == EXPECTED
    assert (pairs.loc[pairs["kind"] == "exact", "distance"] == 0).all()
    assert pairs["distance"].between(0, MAX_D).all()
    assert (pairs["flip"] == "none").all()
    # labels come from the folders
    row = pairs[pairs["file_b"].str.endswith("conflict_tb2.jpg")].iloc[0]
    assert (row.label_a, row.label_b, row.split_a, row.split_b) == (0, 1, "train", "test")
    # cross-split pairs are listed first
    assert pairs["cross_split"].tolist() == sorted(pairs["cross_split"].tolist(), reverse=True)


def test_mirrored_copy_is_not_a_duplicate_by_default(leaky):
    """Pinned decision: flips are NOT duplicates unless include_flips=True."""
    a = average_hash(leaky.root / "train/Malignant/tm1.jpg")
    b = average_hash(leaky.root / "test/Malignant/mirror_tm1.jpg")
    assert int((a != b).sum()) > MAX_D  # the hash itself does not see it
    assert MIRROR_PAIR not in pair_set(leaky.pairs, leaky.root)
    assert leaky.pairs.attrs["include_flips"] is False


def test_include_flips_finds_the_mirrored_copy(leaky):
    pairs = find_duplicates(leaky.items, MAX_D, include_flips=True)
    assert pair_set(pairs, leaky.root) == EXPECTED | {MIRROR_PAIR}
    row = pairs[pairs["file_b"].str.endswith("mirror_tm1.jpg")].iloc[0]
    assert row.flip == "lr"
    assert row.distance <= 2
    assert (pairs.loc[~pairs["file_b"].str.endswith("mirror_tm1.jpg"), "flip"] == "none").all()
    assert pairs.attrs["include_flips"] is True


@pytest.mark.parametrize("flip", ["lr", "tb", "lr+tb"])
def test_include_flips_names_the_flip(tmp_path, flip):
    img = blob_image(np.random.default_rng(11))
    a = save_jpeg(img, tmp_path / "a.jpg")
    b = save_jpeg(img.transpose(audit_hashing._TRANSPOSE[flip]), tmp_path / "b.jpg")
    items = [AuditItem(a, "train", 0), AuditItem(b, "test", 0)]
    assert find_duplicates(items, MAX_D).empty
    pairs = find_duplicates(items, MAX_D, include_flips=True)
    assert len(pairs) == 1 and pairs.iloc[0]["flip"] == flip
    # the flip may sit on either side of the pair
    pairs = find_duplicates(items[::-1], MAX_D, include_flips=True)
    assert len(pairs) == 1 and pairs.iloc[0]["flip"] == flip


def test_difference_hash_method(leaky):
    pairs = find_duplicates(leaky.items, MAX_D, method="difference")
    assert pair_set(pairs, leaky.root) == EXPECTED
    assert pairs.attrs["method"] == "difference"
    with pytest.raises(ValueError):
        find_duplicates(leaky.items, MAX_D, method="wavelet")


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
        "train-train": {"exact": 0, "near": 1},
        "train-val": {"exact": 0, "near": 1},
        "train-test": {"exact": 2, "near": 2},
        "val-test": {"exact": 1, "near": 0},
        "test-test": {"exact": 0, "near": 1},
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
    assert s["max_distance"] == MAX_D and s["include_flips"] is False
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
    pairs = find_duplicates(items, MAX_D)
    assert pairs.empty and list(pairs.columns) == list(PAIR_COLUMNS)
    assert find_duplicates(items, MAX_D, include_flips=True).empty
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
    pairs = find_duplicates([], MAX_D)
    s = summarise(pairs, [])
    assert s["n_test"] == 0 and s["test_fraction_affected"] == 0.0
    paths = write_audit(pairs, s, tmp_path)
    assert all(p.exists() for p in paths.values())


def test_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        find_duplicates([AuditItem(tmp_path / "x.jpg", "holdout", 0)], MAX_D)


def test_pairs_are_oriented_train_val_test(tmp_path):
    img = blob_image(np.random.default_rng(4))
    a = save_jpeg(img, tmp_path / "a.jpg")  # path sorts first but is the test copy
    b = save_jpeg(img, tmp_path / "b.jpg", quality=80)
    pairs = find_duplicates([AuditItem(a, "test", 1), AuditItem(b, "val", 0)], MAX_D)
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
    pairs = find_duplicates(items, MAX_D)
    assert len(pairs) == 6 and (pairs["kind"] == "exact").all()
    assert summarise(pairs, items)["test_with_duplicate_in_train"] == 1


def test_items_from_layout_uses_the_runners_split(leaky):
    """`audit DATA_DIR` finds files with layout.discover and splits train/ like the runner:
    split_train_val over the readable training images (unreadable ones skipped first)."""
    from melanoma.data.decode import load_images
    from melanoma.data.pipeline import split_train_val

    found = layout.discover(leaky.root)  # train/ and test/ only; the val/ folder is not a split
    items, table = audit.items_from_layout(found, val_fraction=0.3, seed=5)
    assert [str(it.path) for it in items] == [str(f) for f in found.train.files + found.test.files]
    loaded = load_images(found.train.files, found.train.labels, 32)  # what the runner decodes
    _, val_index = split_train_val(loaded.labels, 0.3, 5)
    want_val = {str(loaded.files[i]) for i in val_index}
    assert {str(it.path) for it in items if it.split == "val"} == want_val
    assert len(want_val) >= 2
    pairs = find_duplicates(items, MAX_D, table=table)
    got = {(rel(r.file_a, leaky.root), rel(r.file_b, leaky.root)) for r in pairs.itertuples()}
    assert ("train/Benign/tb0.jpg", "test/Benign/exact_tb0.jpg") in got  # train or val side
