"""`melanoma-bench import`: the class mapping line and the counts it prints, its flags, and
the real ISIC 2017 label files (../shared/data/isic2017/labels; skipped when absent, failed in
CI)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.cli import import_data
from melanoma.cli.main import main
from melanoma.data.importers import FORMATS


def source_md_counts(root: Path) -> dict[str, tuple[int, int]]:
    """SOURCE.md's counts table: {split: (Benign, Malignant)}."""
    text = (root / "SOURCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (train|test)\s*\| (\d+)\b.*?\| (\d+)\b", text, flags=re.MULTILINE)
    assert len(rows) == 2, rows
    return {s: (int(b), int(m)) for s, b, m in rows}


def printed_counts(out: str) -> dict[str, tuple[int, int]]:
    """The counts line: 'train: 1746 Benign, 404 Malignant | test: ...'."""
    found = re.findall(r"(train|val|test): (\d+) Benign, (\d+) Malignant", out)
    return {s: (int(b), int(m)) for s, b, m in found}


def test_format_choices_are_the_importers():
    assert set(import_data.FORMAT_NAMES) == {"auto", *FORMATS} and len(import_data.FORMAT_NAMES) == len(FORMATS) + 1


def test_real_isic2017_label_files(isic2017, tmp_path, capsys):
    root, labels = isic2017, isic2017 / "labels"
    u = pd.read_csv(labels / "udacity_dermatologist-ai_ground_truth.csv")  # official test labels
    test_gt = tmp_path / "test_gt.csv"
    pd.DataFrame({"image_id": u["Id"].str.extract(r"(ISIC_\d+)")[0], "melanoma": u["task_1"],
                  "seborrheic_keratosis": u["task_2"]}).to_csv(test_gt, index=False)
    out = tmp_path / "isic"
    assert main(["import", "--labels", str(labels / "ISIC-2017_Training_Part3_GroundTruth.csv"),
                 "--labels", str(labels / "ISIC-2017_Validation_Classes.csv"),
                 "--test-labels", str(test_gt), "--images", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("Classes: Malignant <- melanoma; Benign <- nevus, seborrheic_keratosis, "
            "nevus_or_seborrheic_keratosis; excluded: (none)") in text
    assert printed_counts(text) == source_md_counts(root)
    # the three test copies SOURCE.md removed are reported missing, not silently dropped
    assert "missing images: 3 (ISIC_0015982, ISIC_0016002, ISIC_0016018)" in text
    assert "Test set: official" in text
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == sum(sum(c) for c in source_md_counts(root).values()) == 2747
    assert len(list((out / "test" / "Malignant").glob("*.jpg"))) == 117


def ham_metadata(folder: Path, n_lesions: int = 30) -> Path:
    """HAM10000-style metadata (two images per lesion; mel, nv, bcc) and tiny images."""
    rng = np.random.default_rng(0)
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for k in range(n_lesions):
        dx = ("mel", "nv", "nv", "bcc")[k % 4]
        for m in range(2):
            image_id = f"ISIC_{2 * k + m:07d}"
            (folder / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(
                folder / "images" / f"{image_id}.jpg")
            lines.append(f"HAM_{k:07d},{image_id},{dx},histo,40,female,back")
    (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    return folder / "meta.csv"


def test_mapping_flags_and_counts(tmp_path, capsys):
    meta = ham_metadata(tmp_path)
    args = ["import", "--labels", str(meta), "--images", str(tmp_path / "images")]
    assert main(args + ["--out", str(tmp_path / "a"), "--seed", "3", "--copy"]) == 0
    text = capsys.readouterr().out
    assert "Classes: Malignant <- melanoma; Benign <- nevus; excluded: bcc" in text
    assert "excluded by diagnosis: bcc 14" in text and "0 hard links, 46 copies" in text
    counts = printed_counts(text)
    assert sum(sum(c) for c in counts.values()) == 46 and set(counts) == {"train", "test"}
    assert "grouped by lesion_id; 0 in two splits; seed 3" in text

    assert main(args + ["--out", str(tmp_path / "b"), "--malignant", "melanoma", "bcc",
                        "--test-fraction", "0.25", "--val-fraction", "0.2", "--format", "ham10000"]) == 0
    text = capsys.readouterr().out
    assert "Classes: Malignant <- melanoma, bcc; Benign <- nevus; excluded: (none)" in text
    counts = printed_counts(text)
    assert set(counts) == {"train", "val", "test"}
    assert sum(c[1] for c in counts.values()) == 30  # 8 mel + 7 bcc lesions, two images each

    assert main(args + ["--out", str(tmp_path / "c"), "--exclude"]) == 0  # nothing excluded
    text = capsys.readouterr().out
    assert "Benign <- nevus, bcc; excluded: (none)" in text


@pytest.mark.parametrize("extra, message", [
    (["--malignant", "melanomma"], "unknown diagnosis in malignant 'melanomma'"),
    (["--exclude", "melanoma"], "melanoma is both malignant and excluded"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--test-fraction", "1.5"], "test_fraction must be in [0, 1)"),
    (["--format", "isic2017"], "lacks the isic2017 column"),
])
def test_user_errors_are_one_line(tmp_path, capsys, extra, message):
    meta = ham_metadata(tmp_path, n_lesions=8)
    code = main(["import", "--labels", str(meta), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
