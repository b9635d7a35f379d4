"""Importers: every format parses, the class mapping is explicit, grouped splits never share a
lesion or patient, the output folder is handled safely, and the real ISIC 2017 label files give
SOURCE.md's counts."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data.importers import (
    MANIFEST_COLUMNS,
    build,
    class_mapping,
    detect_format,
    import_dataset,
    read_labels,
)
from melanoma.util.errors import UserError


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def tiny_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value % 256, dtype=np.uint8)).save(path)


# --------------------------------------------------------------------------- formats

FORMAT_CASES = {
    "isic2016": ("image,label\nISIC_0000001,benign\nISIC_0000002,malignant\nISIC_0000003,1.0\n",
                 ["benign", "melanoma", "melanoma"]),
    "isic2016 (official, no header)": ("ISIC_0000001,0.0\nISIC_0000002,malignant\n", ["benign", "melanoma"]),
    "isic2017": ("image_id,melanoma,seborrheic_keratosis\nISIC_1,1.0,0.0\nISIC_2,0.0,1.0\nISIC_3,0.0,0.0\n",
                 ["melanoma", "seborrheic_keratosis", "nevus"]),
    "isic2017 (no sk column)": ("image_id,melanoma\nISIC_1,1.0\nISIC_2,0.0\n",
                                ["melanoma", "nevus_or_seborrheic_keratosis"]),
    "isic2018": (("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nA,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
                 "B,0.0,0.0,0.0,1.0,0.0,0.0,0.0\n"), ["nevus", "akiec"]),
    "isic2019": (("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nA,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
                 "B,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\nC,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0\n"),
                 ["melanoma", "scc", "bkl"]),
    "isic2020": (("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
                 "benign_malignant,target\nI1,P1,male,45,torso,unknown,benign,0\n"
                 "I2,P1,male,45,torso,melanoma,malignant,1\nI3,P2,female,50,torso,lentigo NOS,benign,0\n"),
                 ["unknown_benign", "melanoma", "lentigo_nos"]),
    "ham10000": (("lesion_id,image_id,dx,dx_type,age,sex,localization\n"
                 "HAM_1,ISIC_1,bkl,histo,80.0,male,scalp\nHAM_1,ISIC_2,bkl,histo,80.0,male,scalp\n"
                 "HAM_2,ISIC_3,mel,histo,50.0,female,back\n"), ["bkl", "bkl", "melanoma"]),
}


@pytest.mark.parametrize("case", FORMAT_CASES)
def test_each_format_parses_and_is_detected(tmp_path, case):
    text, diagnoses = FORMAT_CASES[case]
    rows, name = read_labels(write_csv(tmp_path / "gt.csv", text))
    assert name == case.split()[0]
    assert rows["diagnosis"].tolist() == diagnoses
    assert rows["label_source"].iloc[0].startswith("gt.csv:")
    grouped = name in ("isic2020", "ham10000")
    assert (rows["group_id"] != "").all() == grouped
    rows2, _ = read_labels(tmp_path / "gt.csv", name)  # named explicitly: the same rows
    assert rows2.equals(rows)


def test_unknown_header_names_the_known_formats(tmp_path):
    with pytest.raises(UserError, match="cannot tell the format.*ham10000 \\(lesion_id"):
        read_labels(write_csv(tmp_path / "x.csv", "file,class\na.jpg,1\n"))
    assert detect_format(["IMAGE", "Label"]).name == "isic2016"


@pytest.mark.parametrize("text, match", [
    ("lesion_id,image_id,dx\nL1,I1,nv\nL2,I2,xyz\nL3,I3,nv\nL4,I4,abc\n", r"unknown label 'abc', 'xyz' on lines 3, 5$"),
    ("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nA,1,1,0,0,0,0,0,0,0\n", r"not exactly one of .* is 1 on line 2$"),
    ("image_id,melanoma\n" + "".join(f"I{k},2\n" for k in range(8)),
     r"'melanoma' is not 0/1 on lines 2, 3, 4, 5, 6 and 3 more$"),
    ("image_id,melanoma\nI1,1\nI1,0\n", "image id listed more than once on lines 2, 3$"),
])
def test_bad_labels_are_one_line_errors_naming_the_lines(tmp_path, text, match):
    with pytest.raises(UserError, match=match) as err:
        read_labels(write_csv(tmp_path / "gt.csv", text))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- class mapping

def test_class_mapping_defaults_options_and_errors():
    m = class_mapping()
    assert m.label("melanoma") == "Malignant" and m.label("nevus") == "Benign"
    assert m.label("bcc") is None and m.label("akiec") is None and m.label("scc") is None
    assert m.describe(["melanoma", "nevus", "bcc"]) == "Malignant <- melanoma; Benign <- nevus; excluded: bcc"
    wide = class_mapping(malignant=["melanoma", "bcc", "akiec", "scc"])
    assert wide.label("bcc") == "Malignant" and wide.excluded == ("unknown",)
    with pytest.raises(UserError, match="both malignant and excluded"):
        class_mapping(malignant=["melanoma", "bcc"], exclude=["bcc"])
    with pytest.raises(UserError, match="did you mean 'melanoma'"):
        class_mapping(malignant=["melanom"])


def test_everything_excluded_is_an_error(tmp_path):
    gt = write_csv(tmp_path / "gt.csv", "lesion_id,image_id,dx\nL1,I1,bcc\nL2,I2,akiec\n")
    with pytest.raises(UserError, match="every row is excluded.*excluded: akiec, bcc"):
        import_dataset("auto", gt, tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------- grouped splits

def ham_like(tmp_path: Path, n_lesions: int = 160, seed: int = 0) -> tuple[Path, Path]:
    """HAM10000-style metadata with 1-4 images per lesion, images split over two folders."""
    rng = np.random.default_rng(seed)
    dx = rng.choice(["nv", "mel", "bkl", "bcc", "akiec", "df"], n_lesions, p=[.5, .2, .15, .07, .05, .03])
    rows, k = [], 0
    for lesion in range(n_lesions):
        for _ in range(int(rng.integers(1, 5))):
            rows.append(f"HAM_{lesion:07d},ISIC_{k:07d},{dx[lesion]},histo,50.0,male,back")
            tiny_png(tmp_path / "images" / f"part_{k % 2 + 1}" / f"ISIC_{k:07d}.png", k)
            k += 1
    meta = write_csv(tmp_path / "HAM10000_metadata.csv",
                     "lesion_id,image_id,dx,dx_type,age,sex,localization\n" + "\n".join(rows))
    return meta, tmp_path / "images"


def test_ham_lesions_never_straddle_splits_and_classes_stay_balanced(tmp_path):
    meta, images = ham_like(tmp_path)
    s = import_dataset("auto", meta, images, tmp_path / "out", test_fraction=0.2, val_fraction=0.2, seed=3)
    man = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert tuple(man.columns) == MANIFEST_COLUMNS
    assert man.groupby("group_id")["split"].nunique().max() == 1
    assert s.groups_in_two_splits == [] and s.grouped_by == ["lesion_id"]
    share = man.groupby("split")["label"].apply(lambda x: (x == "Malignant").mean())
    overall = (man["label"] == "Malignant").mean()
    assert set(share.index) == {"train", "val", "test"}
    assert (abs(share - overall) < 0.08).all(), share.to_dict()
    assert 0.12 < (man["split"] == "test").mean() < 0.28
    assert set(s.excluded) == {"akiec", "bcc"}  # excluded by default
    assert not man["diagnosis"].isin(["bcc", "akiec"]).any()
    for rel, split, label in zip(man["file"], man["split"], man["label"]):
        assert rel.startswith(f"{split}/{label}/") and (tmp_path / "out" / rel).is_file()
    assert s.n_linked == len(man) and s.n_copied == 0


def test_same_seed_same_split_and_other_malignant_mapping(tmp_path):
    meta, images = ham_like(tmp_path, n_lesions=60)
    a = import_dataset(None, meta, images, tmp_path / "a", seed=5)
    import_dataset(None, meta, images, tmp_path / "b", seed=5)
    ma = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert ma.equals(pd.read_csv(tmp_path / "b" / "manifest.csv"))
    wide = import_dataset("ham10000", meta, images, tmp_path / "c", seed=5,
                          malignant=("melanoma", "bcc", "akiec", "scc"))
    assert wide.excluded == {} and sum(c["Malignant"] for c in wide.counts.values()) > sum(
        c["Malignant"] for c in a.counts.values())
    assert "Malignant <- melanoma, bcc, akiec" in wide.mapping


def test_isic2020_grouped_by_patient_with_an_official_test_set(tmp_path):
    rng = np.random.default_rng(1)
    head = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
    rows, k = [], 0
    for patient in range(50):
        for _ in range(int(rng.integers(1, 6))):
            mel = rng.random() < 0.3
            rows.append(f"ISIC_{k:07d},IP_{patient:07d},male,40,torso,{'melanoma' if mel else 'nevus'},"
                        f"{'malignant' if mel else 'benign'},{int(mel)}")
            tiny_png(tmp_path / "train" / f"ISIC_{k:07d}.jpg", k)
            k += 1
    gt = write_csv(tmp_path / "ISIC_2020_Training_GroundTruth.csv", head + "\n".join(rows))
    s = import_dataset("auto", gt, tmp_path / "train", tmp_path / "out", test_fraction=0.25, seed=0)
    man = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert man.groupby("group_id")["split"].nunique().max() == 1
    assert s.grouped_by == ["patient_id"] and s.formats == ["isic2020"]
    # an official test set stays test, whatever its patients
    test = write_csv(tmp_path / "test.csv", head + "ISIC_9000000,IP_0000000,male,40,torso,nevus,benign,0\n"
                     "ISIC_9000001,IP_0000001,male,40,torso,melanoma,malignant,1\n")
    tiny_png(tmp_path / "test_images" / "ISIC_9000000.jpg", 1)
    tiny_png(tmp_path / "test_images" / "ISIC_9000001.jpg", 2)
    s = import_dataset("auto", gt, tmp_path / "train", tmp_path / "out", test_labels_csv=test,
                       test_images_dir=tmp_path / "test_images")
    assert s.counts["test"] == {"Benign": 1, "Malignant": 1} and s.test_source == "official"
    assert set(s.groups_in_two_splits) <= {"IP_0000000", "IP_0000001"}


# --------------------------------------------------------------------------- files and folders

def small_2017(tmp_path: Path, n: int = 12) -> tuple[Path, Path]:
    lines = [f"ISIC_{k:07d},{float(k % 3 == 0)},0.0" for k in range(n)]
    for k in range(n):
        tiny_png(tmp_path / "flat" / f"ISIC_{k:07d}.jpg", k)
    header = "image_id,melanoma,seborrheic_keratosis\n"
    return write_csv(tmp_path / "gt.csv", header + "\n".join(lines)), tmp_path / "flat"


def test_missing_images_are_counted_and_all_missing_is_an_error(tmp_path):
    gt, images = small_2017(tmp_path)
    (images / "ISIC_0000004.jpg").unlink()
    s = import_dataset("isic2017", gt, images, tmp_path / "out", test_fraction=0.25)
    assert s.missing == ["ISIC_0000004"] and sum(sum(c.values()) for c in s.counts.values()) == 11
    assert "missing images: 1 (ISIC_0000004)" in s.describe()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="none of the 12 images listed was found"):
        import_dataset("isic2017", gt, tmp_path / "empty", tmp_path / "out2")


def test_output_folder_rules(tmp_path):
    gt, images = small_2017(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no previous import"):
        import_dataset("isic2017", gt, images, busy, test_fraction=0.25)
    assert (busy / "notes.txt").read_text() == "mine" and sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    (busy / "manifest.csv").write_text("split,class,image_id\n")  # someone else's manifest
    with pytest.raises(UserError, match="holds no previous import"):
        import_dataset("isic2017", gt, images, busy, test_fraction=0.25)
    with pytest.raises(UserError, match="lies inside the output folder"):
        import_dataset("isic2017", gt, images, tmp_path, test_fraction=0.25)
    out = tmp_path / "out"
    import_dataset("isic2017", gt, images, out, test_fraction=0.25, seed=0)
    stale = out / "train" / "Benign" / "stale.jpg"
    stale.write_bytes(b"x")
    (out / "README.txt").write_text("kept")
    s = import_dataset("isic2017", gt, images, out, test_fraction=0.5, seed=1)  # re-import replaces
    assert not stale.exists() and (out / "README.txt").read_text() == "kept"
    assert not (out / build.PARTIAL).exists()
    assert len(pd.read_csv(out / "manifest.csv")) == 12 == sum(sum(c.values()) for c in s.counts.values())
    assert all((images / f"ISIC_{k:07d}.jpg").is_file() for k in range(12))  # sources untouched


def test_copies_when_hard_links_fail(tmp_path, monkeypatch):
    gt, images = small_2017(tmp_path)
    s = import_dataset("isic2017", gt, images, tmp_path / "a", test_fraction=0.25, link=False)
    assert s.n_copied == 12 and s.n_linked == 0
    def refuse(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(build.os, "link", refuse)
    s = import_dataset("isic2017", gt, images, tmp_path / "b", test_fraction=0.25)
    assert s.n_copied == 12
    f = next((tmp_path / "b" / "train").rglob("*.jpg"))
    assert f.read_bytes() == (images / f.name).read_bytes() and f.stat().st_nlink == 1


def test_an_id_found_twice_is_an_error(tmp_path):
    gt, images = small_2017(tmp_path)
    tiny_png(images / "sub" / "ISIC_0000003.png", 3)
    with pytest.raises(UserError, match="ISIC_0000003 is found more than once"):
        import_dataset("isic2017", gt, images, tmp_path / "out")


# --------------------------------------------------------------------------- real ISIC 2017 files

def source_md_counts(root: Path) -> dict[str, dict[str, int]]:
    """The counts table of SOURCE.md: | split | Benign (...) | Malignant (...) |."""
    text = (root / "SOURCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (train|test)\s*\| (\d+)\b.*?\| (\d+)\b", text, flags=re.MULTILINE)
    assert len(rows) == 2, rows
    return {s: {"Benign": int(b), "Malignant": int(m)} for s, b, m in rows}


def udacity_as_isic2017(root: Path, path: Path) -> Path:
    """The official test labels (Udacity's copy: path,task_1=melanoma,task_2=sk) in 2017 form."""
    u = pd.read_csv(root / "labels" / "udacity_dermatologist-ai_ground_truth.csv")
    pd.DataFrame({"image_id": u["Id"].str.extract(r"(ISIC_\d+)")[0], "melanoma": u["task_1"],
                  "seborrheic_keratosis": u["task_2"]}).to_csv(path, index=False)
    return path


def test_real_isic2017_label_files_give_source_md_counts(isic2017, tmp_path):
    root, labels = isic2017, isic2017 / "labels"
    train, fmt = read_labels(labels / "ISIC-2017_Training_Part3_GroundTruth.csv")
    assert fmt == "isic2017"
    assert train["diagnosis"].value_counts().to_dict() == {"nevus": 1372, "melanoma": 374, "seborrheic_keratosis": 254}
    val, _ = read_labels(labels / "ISIC-2017_Validation_Classes.csv")
    assert val["diagnosis"].value_counts().to_dict() == {"nevus_or_seborrheic_keratosis": 120, "melanoma": 30}
    s = import_dataset("auto", [labels / "ISIC-2017_Training_Part3_GroundTruth.csv",
                                labels / "ISIC-2017_Validation_Classes.csv"], root, tmp_path / "out",
                       test_labels_csv=udacity_as_isic2017(root, tmp_path / "test_gt.csv"))
    assert s.counts == source_md_counts(root)
    # SOURCE.md removed three test images that are byte-identical to training images
    assert s.missing == ["ISIC_0015982", "ISIC_0016002", "ISIC_0016018"]
    man = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    shared = pd.read_csv(root / "manifest.csv")
    shared = shared[shared["note"].isna()].set_index("image_id")
    ids = man["file"].str.extract(r"(ISIC_\d+)")[0]
    assert (man["label"].to_numpy() == shared.loc[ids, "class"].to_numpy()).all()
    assert (man["split"].to_numpy() == shared.loc[ids, "split"].to_numpy()).all()
