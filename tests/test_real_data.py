"""CI sees real images: the whole `run` path (tiny model: B0 at 32 px, 1 epoch) on 40 real
ISIC 2017 dermoscopy images (10 per class and split, copied from ../shared/data/isic2017 into
a temporary folder), and the importer on the real label files.

When ../shared/data/isic2017 is absent (a user's machine) the tests skip with the reason; in
CI (CI=true) they fail instead. Not marked slow, so the default `pytest` runs it: measured
55 s of CPU for this file (one B0 trace and epoch at 32 px, the audit, the report; 3 min of
wall time on the shared 2-core machine at load 10).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma.cli.main import main

PER_CLASS = 10


@pytest.fixture(scope="module")
def real_subset(isic2017, tmp_path_factory) -> Path:
    """10 images per class and split, a seeded choice, copied (never linked) into tmp."""
    root = isic2017
    out = tmp_path_factory.mktemp("isic_subset")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("Benign", "Malignant"):
            files = sorted((root / split / cls).glob("*.jpg"))
            (out / split / cls).mkdir(parents=True)
            for k in sorted(rng.choice(len(files), PER_CLASS, replace=False)):
                shutil.copyfile(files[k], out / split / cls / files[k].name)
    return out


def test_run_on_real_images(real_subset, tiny_config, tmp_path, capsys):
    config = tmp_path / "real.toml"
    config.write_text(tiny_config("real_tiny", [{"name": "tiny_real", "preprocessing": "samplewise"}],
                                  seed=3, synthetic=None, defaults={"bn_momentum": 0.5},
                                  data={"val_fraction": 0.3, "cache_dir": tmp_path / "cache"},
                                  evaluation={"bootstrap_resamples": 200}))
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--data-dir", str(real_subset), "--out", str(out),
                 "--models-dir", str(tmp_path / "models")]) == 0
    assert "tiny_real" in capsys.readouterr().out  # the table on stdout
    saved = json.loads((out / "results.json").read_text())
    (row,) = saved["rows"]
    assert row["n_test"] == 2 * PER_CLASS and row["n_pos"] == PER_CLASS
    assert 0.0 <= row["auc"] <= 1.0 and row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
    assert np.isfinite(row["threshold"])  # chosen on the real validation images
    data = saved["provenance"]["data"]
    assert data["n_train"] + data["n_val"] == 2 * PER_CLASS
    assert sum(data["n_train_by_class"].values()) == data["n_train"]
    assert data["skipped_images"] == 0
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 2 * PER_CLASS and predictions["prob_malignant"].between(0, 1).all()
    assert predictions["file"].str.match(r"test/(Benign|Malignant)/ISIC_\d+\.jpg").all()
    # the leakage audit ran on the real images: 40 distinct photographs, no pairs
    audit = json.loads((out / "audit_summary.json").read_text())
    assert audit["n_items"] == 4 * PER_CLASS and audit["n_unreadable"] == 0
    assert audit["pairs_total"] == 0 and audit["n_test_clean"] == 2 * PER_CLASS
    for name in ("index.html", "results.md", "roc.png", "audit_pairs.png", "clean_test.csv"):
        assert (out / name).is_file(), name


def test_import_the_real_validation_labels(isic2017, tmp_path, capsys):
    """The official ISIC 2017 validation ground truth (150 images, 30 melanoma) imported from
    the shared images: counts from the file, a stratified seeded test share, bytes unchanged."""
    root = isic2017
    labels = root / "labels" / "ISIC-2017_Validation_Classes.csv"
    out = tmp_path / "val_import"
    assert main(["import", "--labels", str(labels), "--images", str(root), "--out", str(out),
                 "--test-fraction", "0.2", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "Classes: Malignant <- melanoma; Benign <- nevus_or_seborrheic_keratosis" in text
    assert "train: 96 Benign, 24 Malignant | test: 24 Benign, 6 Malignant" in text
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    truth = pd.read_csv(labels)
    assert len(manifest) == len(truth) == 150
    want = dict(zip(truth["image_id"], np.where(truth["melanoma"] == 1, "Malignant", "Benign")))
    assert all(want[Path(f).stem] == lab for f, lab in zip(manifest["file"], manifest["label"]))
    for f, src in zip(manifest["file"][:10], manifest["source_file"][:10]):
        assert (out / f).read_bytes() == Path(src).read_bytes()
