"""Tests for melanoma.data.synthetic: deterministic files, the public layout, and the cache."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.data import synthetic
from melanoma.data.layout import discover
from melanoma.data.synthetic import SyntheticSpec, ensure_dataset, generate
from melanoma.util.errors import UserError

TINY = SyntheticSpec(n_train_per_class=3, n_test_per_class=2, image_size=40, seed=7)


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by its relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("a"), TINY)


def test_same_spec_gives_byte_identical_files(tiny_dir, tmp_path):
    again = digests(generate(tmp_path / "b", TINY))
    first = digests(tiny_dir)
    assert first == again
    assert len(first) == 2 * (3 + 2) + 1  # every image plus SPEC.json


def test_worker_processes_write_the_same_files(tiny_dir, tmp_path, monkeypatch):
    """Large sets are rendered by worker processes; every image has its own seed, so the
    files are byte-identical to the ones written in this process."""
    monkeypatch.setattr(synthetic, "PARALLEL_FROM", 2)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    assert digests(generate(tmp_path / "parallel", TINY)) == digests(tiny_dir)


def test_different_seed_gives_different_files(tiny_dir, tmp_path):
    other = digests(generate(tmp_path, replace(TINY, seed=8)))
    first = digests(tiny_dir)
    images = [k for k in first if k.endswith(".jpg")]
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in images)


def test_layout_and_counts(tiny_dir):
    expected = {f"{split}/{cls}/{cls.lower()}_{i:05d}.jpg"
                for split, n in (("train", 3), ("test", 2))
                for cls in ("Benign", "Malignant") for i in range(n)}
    assert set(digests(tiny_dir)) == expected | {"SPEC.json"}
    found = discover(tiny_dir)
    assert found.root == tiny_dir
    assert found.train.labels == (0, 0, 0, 1, 1, 1)
    assert found.test.labels == (0, 0, 1, 1)
    assert json.loads((tiny_dir / "SPEC.json").read_text())["seed"] == 7


def test_images_are_rgb_of_the_requested_size(tiny_dir):
    for path in tiny_dir.rglob("*.jpg"):
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (40, 40))
    pixels = [np.asarray(Image.open(p)) for p in sorted(tiny_dir.rglob("*.jpg"))]
    assert len({p.tobytes() for p in pixels}) == len(pixels)  # no two images alike
    assert all(p.std() > 5 for p in pixels)  # not blank


def test_train_and_test_images_differ(tiny_dir):
    train = tiny_dir / "train" / "Benign" / "benign_00000.jpg"
    test = tiny_dir / "test" / "Benign" / "benign_00000.jpg"
    assert train.read_bytes() != test.read_bytes()


def test_spec_key_depends_on_every_field():
    keys = {TINY.key()}
    for change in (dict(n_train_per_class=4), dict(n_test_per_class=3), dict(image_size=41),
                   dict(seed=8), dict(class_separation=2.0), dict(jpeg_quality=90)):
        keys.add(replace(TINY, **change).key())
    assert len(keys) == 7
    assert TINY.key() == SyntheticSpec(3, 2, 40, 7).key()


def test_ensure_dataset_caches_in_the_given_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "env"))
    target = ensure_dataset(TINY, cache_dir=tmp_path / "arg")
    assert target == tmp_path / "arg" / f"synthetic-{TINY.key()}"
    assert not (tmp_path / "env").exists()  # the argument wins over the variable
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    calls = []
    monkeypatch.setattr(synthetic, "generate", lambda *a: calls.append(a))
    assert ensure_dataset(TINY, cache_dir=tmp_path / "arg") == target
    assert calls == []  # second call does not regenerate
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*")} == before
    assert [p.name for p in (tmp_path / "arg").iterdir()] == [target.name]  # no staging left


def test_ensure_dataset_honours_env_variable(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "env"))
    target = ensure_dataset(TINY)
    assert target == tmp_path / "env" / f"synthetic-{TINY.key()}"
    assert digests(target) == digests(tiny_dir)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MELANOMA_DATA_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert synthetic.default_cache_dir() == tmp_path / ".cache" / "melanoma-bench"
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "x"))
    assert synthetic.default_cache_dir() == tmp_path / "x"


def test_ensure_dataset_incomplete_folder_is_a_clear_error(tmp_path):
    target = tmp_path / f"synthetic-{TINY.key()}"
    (target / "train").mkdir(parents=True)  # e.g. a half-deleted cache: no SPEC.json
    with pytest.raises(UserError, match=r"incomplete synthetic data set .*delete that folder"):
        ensure_dataset(TINY, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # staging cleaned up


def test_classes_differ_on_average(tmp_path):
    """The latent score makes malignant lesions larger and darker: a learnable signal."""
    spec = SyntheticSpec(n_train_per_class=12, n_test_per_class=2, image_size=40, seed=3)
    root = generate(tmp_path, spec)
    brightness = {cls: np.mean([np.asarray(Image.open(p), np.float64).mean()
                                for p in (root / "train" / cls).glob("*.jpg")])
                  for cls in ("Benign", "Malignant")}
    assert brightness["Malignant"] < brightness["Benign"]
