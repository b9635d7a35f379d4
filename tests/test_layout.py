"""Tests for melanoma.data.layout: the public data set's folder variants and clear errors."""

from pathlib import Path

import pytest

from melanoma.data.layout import discover, has_class_folders, image_files, read_class_folders
from melanoma.util.errors import UserError


def make_tree(root: Path, spec: dict) -> Path:
    """Create ``{relative path: bytes}`` files (a value of None makes an empty folder)."""
    for rel, content in spec.items():
        path = root / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return root


def full_tree(root: Path, benign="Benign", malignant="Malignant") -> Path:
    files = {}
    for split in ("train", "test"):
        for cls, names in ((benign, ["b2.jpg", "b1.jpg", "b10.JPG"]),
                           (malignant, ["m1.png", "m0.jpeg"])):
            for name in names:
                files[f"{split}/{cls}/{name}"] = b"x"
    return make_tree(root, files)


@pytest.mark.parametrize("benign,malignant", [("Benign", "Malignant"), ("benign", "malignant"),
                                              ("BENIGN", "malignant")])
def test_class_folder_names_any_case(tmp_path, benign, malignant):
    found = discover(full_tree(tmp_path, benign, malignant))
    assert found.root == tmp_path
    for split in (found.train, found.test):
        assert [p.name for p in split.files] == ["b1.jpg", "b10.JPG", "b2.jpg", "m0.jpeg", "m1.png"]
        assert split.labels == (0, 0, 0, 1, 1)
        assert split.files[0].parent.name == benign and split.files[-1].parent.name == malignant
        assert (split.count(0), split.count(1), len(split)) == (3, 2, 5)


def test_root_holding_single_folder_as_zip_unpacks(tmp_path):
    inner = full_tree(tmp_path / "melanoma_cancer_dataset")
    (tmp_path / ".DS_Store").write_bytes(b"junk")  # hidden file beside it does not matter
    (tmp_path / ".hidden_dir").mkdir()  # neither does a hidden folder
    found = discover(tmp_path)
    assert found.root == inner
    assert len(found.train) == 5 and len(found.test) == 5


def test_two_candidate_folders_are_not_guessed(tmp_path):
    full_tree(tmp_path / "a")
    full_tree(tmp_path / "b")
    with pytest.raises(UserError, match="no train/ and no test/ folder"):
        discover(tmp_path)


def test_hidden_and_non_image_files_ignored(tmp_path):
    full_tree(tmp_path)
    make_tree(tmp_path, {
        "train/Benign/.b0.jpg": b"x",        # hidden, image suffix
        "train/Benign/._b1.jpg": b"x",       # macOS resource fork
        "train/Benign/notes.txt": b"x",
        "train/Benign/Thumbs.db": b"x",
        "train/Benign/noext": b"x",
        "train/Benign/sub.jpg/inner.jpg": b"x",  # a folder named like an image
        "train/Malignant/readme.md": b"x",
    })
    found = discover(tmp_path)
    assert [p.name for p in found.train.files] == ["b1.jpg", "b10.JPG", "b2.jpg", "m0.jpeg",
                                                   "m1.png"]
    assert found.train.labels == (0, 0, 0, 1, 1)


def test_image_files_sorted_by_name(tmp_path):
    make_tree(tmp_path, {name: b"x" for name in ("c.jpg", "a.jpg", "B.jpg", "b.jpg")})
    assert [p.name for p in image_files(tmp_path)] == ["B.jpg", "a.jpg", "b.jpg", "c.jpg"]


def test_extra_class_folder_is_not_a_label(tmp_path):
    full_tree(tmp_path)
    make_tree(tmp_path, {"train/Unknown/u.jpg": b"x"})
    found = discover(tmp_path)
    assert "Unknown" not in {p.parent.name for p in found.train.files}
    assert set(found.train.labels) == {0, 1}


@pytest.mark.parametrize("missing", ["train", "test"])
def test_missing_split(tmp_path, missing):
    full_tree(tmp_path)
    for path in sorted((tmp_path / missing).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / missing).rmdir()
    with pytest.raises(UserError) as info:
        discover(tmp_path)
    message = str(info.value)
    assert f"no {missing}/ folder" in message and str(tmp_path) in message
    other = "test" if missing == "train" else "train"
    assert f"no {other}/" not in message
    assert "\n" not in message


def test_missing_both_splits(tmp_path):
    (tmp_path / "something").mkdir()
    (tmp_path / "else").mkdir()
    with pytest.raises(UserError, match=r"no train/ and no test/ folder"):
        discover(tmp_path)


@pytest.mark.parametrize("cls,expected", [("Malignant", "Malignant/"), ("Benign", "Benign/")])
def test_missing_class_folder(tmp_path, cls, expected):
    full_tree(tmp_path)
    for path in (tmp_path / "test" / cls).iterdir():
        path.unlink()
    (tmp_path / "test" / cls).rmdir()
    with pytest.raises(UserError) as info:
        discover(tmp_path)
    assert f"{tmp_path / 'test'} has no {expected} folder" in str(info.value)


def test_empty_class_folder(tmp_path):
    full_tree(tmp_path)
    for path in (tmp_path / "train" / "Malignant").iterdir():
        path.unlink()
    (tmp_path / "train" / "Malignant" / "notes.txt").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"Malignant holds no image files"):
        discover(tmp_path)


def test_nonexistent_root(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover(tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    (tmp_path / "file.zip").write_bytes(b"PK")
    with pytest.raises(UserError, match="not a folder"):
        discover(tmp_path / "file.zip")


def test_two_folders_matching_one_class_ignoring_case(tmp_path):
    full_tree(tmp_path)
    make_tree(tmp_path, {"train/BENIGN/x.jpg": b"x"})
    if (tmp_path / "train" / "BENIGN").samefile(tmp_path / "train" / "Benign"):
        pytest.skip("case-insensitive file system")
    with pytest.raises(UserError, match="several folders named 'benign'"):
        discover(tmp_path)


def test_has_class_folders(tmp_path):
    full_tree(tmp_path)
    assert has_class_folders(tmp_path / "train")
    assert has_class_folders(str(tmp_path / "test"))
    assert not has_class_folders(tmp_path)  # holds train/test, not classes
    assert not has_class_folders(tmp_path / "missing")
    make_tree(tmp_path, {"only_benign/benign/a.jpg": b"x"})
    assert not has_class_folders(tmp_path / "only_benign")
    make_tree(tmp_path, {"lower/benign/a.jpg": b"x", "lower/malignant": None})
    assert has_class_folders(tmp_path / "lower")  # folders present, even if empty


def test_read_class_folders_directly(tmp_path):
    full_tree(tmp_path)
    split = read_class_folders(tmp_path / "test")
    assert split.labels == (0, 0, 0, 1, 1)
    assert all(p.is_file() and p.parent.parent == tmp_path / "test" for p in split.files)
