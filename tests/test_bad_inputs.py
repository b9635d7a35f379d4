"""Bad inputs, one per case: each is skipped and counted with a warning, or is a one-line
error (exit 2); none ends in a traceback. Pre-flight and loading are tested directly (fast);
one tiny `run` goes through the CLI over a data set holding every skippable bad file."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import struct
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.cli.main import main
from melanoma.data import layout, preflight
from melanoma.data.decode import load_images
from melanoma.util.errors import UserError

RNG = np.random.default_rng(0)


def huge_png_header(width: int = 10000, height: int = 10000) -> bytes:
    """A 60-byte PNG whose IHDR claims ``width`` x ``height``: only a header, no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))


def png(mode: str, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (size, size, 3), np.uint8)).convert(mode).save(
        buffer, "PNG")
    return buffer.getvalue()


def bad_files(jpeg) -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, what pre-flight flags it as, or None when it loads as RGB)."""
    return {
        "corrupt.jpg": (jpeg()[:200], "unreadable"),  # truncated inside the header
        "half.jpg": (jpeg()[:len(jpeg()) // 2], None),  # header fine, decoding fails at load
        "zero.jpg": (b"", "unreadable"),
        "text.jpg": (b"this is not an image\n", "unreadable"),
        "huge.png": (huge_png_header(), "huge"),
        "one_pixel.png": (png("RGB", 1), "tiny"),
        ".DS_Store": (b"\0\0\0\1Bud1", "hidden"),
        "notes.txt": (b"hello", "non_image"),
    }


def add_bad_files(root: Path, jpeg) -> Path:
    """Every bad case in ``root``/train/Benign and the odd-but-fine formats in
    train/Malignant of a set made by the ``image_set`` fixture (10 train, 4 test a class)."""
    benign, malignant = root / "train" / "Benign", root / "train" / "Malignant"
    for name, (data, _) in bad_files(jpeg).items():
        (benign / name).write_bytes(data)
    odd = {"plain.png": png("RGB"), "rgba.png": jpeg("RGBA"), "gray.jpg": jpeg("L"),
           "cmyk.jpg": jpeg("CMYK"), "palette.png": png("P")}
    for name, data in odd.items():
        (malignant / name).write_bytes(data)
    (benign / "nested" / "deeper").mkdir(parents=True)
    (benign / "nested" / "deeper" / "x.jpg").write_bytes(jpeg())
    os.symlink(".", benign / "loop")  # a folder link to itself
    os.symlink("self.jpg", benign / "self.jpg")  # a link loop named like an image
    (malignant / os.fsdecode(b"caf\xe9.jpg")).write_bytes(jpeg())  # Latin-1 names
    (root / "test" / "Benign" / os.fsdecode(b"na\xefve.jpg")).write_bytes(jpeg())
    return root


@pytest.fixture
def bad_set(tmp_path, image_set, jpeg_bytes):
    return add_bad_files(image_set(tmp_path / "data"), jpeg_bytes)


def test_preflight_counts_every_bad_file(bad_set):
    report = preflight.scan(layout.discover(bad_set))
    w = report.warnings
    assert w["unreadable"] == 4  # truncated, zero-byte, text, self-link loop
    assert w["huge"] == 1 and w["tiny"] == 1 and w["non_image"] == 1
    assert w["hidden"] == 1 and w["nested_folders"] == 2  # nested/ and the loop link
    assert report.classes["train"] == {"benign": 10 + 2, "malignant": 10 + 6}
    assert report.classes["test"] == {"benign": 4 + 1, "malignant": 4}
    assert "huge.png" in " ".join(report.examples["huge"])
    json.dumps(report.to_dict())  # storable in results.json, non-UTF-8 name included
    assert "preflight: train" in report.summary()


def test_strict_makes_warnings_one_line_errors(bad_set):
    with pytest.raises(UserError, match="--strict.*unreadable"):
        preflight.check(layout.discover(bad_set), strict=True)


def test_clean_set_passes_strict(image_set, tmp_path):
    report = preflight.check(layout.discover(image_set(tmp_path / "d")), strict=True)
    assert report.warnings == {}
    assert report.to_dict()["info"] == {}


def test_loading_skips_and_counts_bad_files_as_rgb(bad_set, capsys):
    found = layout.discover(bad_set)
    records: list[logging.LogRecord] = []
    seen = logging.Handler()
    seen.emit = records.append  # counted here whether or not the CLI set logging up
    library = logging.getLogger("melanoma")
    library.addHandler(seen)
    try:
        loaded = load_images(found.train.files, found.train.labels, 32)
    finally:
        library.removeHandler(seen)
    skipped = {Path(f).name: why for f, why in loaded.skipped}
    assert set(skipped) == {"corrupt.jpg", "half.jpg", "zero.jpg", "text.jpg",
                            "huge.png"}
    assert "pixels" in skipped["huge.png"]
    assert loaded.pixels.shape == (10 + 1 + 10 + 6, 32, 32, 3)  # 1x1 upscaled; odd modes RGB
    warnings = [r.getMessage() for r in records if r.name == "melanoma.data.decode"]
    assert sum("warning: skipped unreadable image" in w for w in warnings) == 5
    assert "Traceback" not in capsys.readouterr().err


def test_huge_header_is_never_decoded(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png_header())
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    assert preflight.header_problem(path) == "huge"
    assert load_images([path], [0], 32).skipped


@pytest.mark.parametrize("case, message", [
    ("missing_test", "no test/ folder"),
    ("empty_class", "holds no image files"),
    ("one_class", "no Malignant/ folder"),
    ("only_bad_files", "holds no image files"),
])
def test_broken_layouts_exit_2_with_one_line(image_set, tmp_path, capsys, case, message):
    root = image_set(tmp_path / "data", n=2, test_n=2)
    if case == "missing_test":
        for p in sorted((root / "test").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "test").rmdir()
    elif case == "empty_class":
        for p in (root / "train" / "Malignant").iterdir():
            p.unlink()
    elif case == "one_class":
        for p in (root / "test" / "Malignant").iterdir():
            p.unlink()
        (root / "test" / "Malignant").rmdir()
    elif case == "only_bad_files":
        for p in (root / "train" / "Malignant").iterdir():
            p.unlink()
        (root / "train" / "Malignant" / ".DS_Store").write_bytes(b"x")
        (root / "train" / "Malignant" / "notes.txt").write_bytes(b"x")
    assert main(["check", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("melanoma-bench: error:") and message in err


def test_unreadable_only_class_is_a_one_line_error(image_set, bad_config, tmp_path, capsys):
    """A class whose files all fail to decode: caught after loading, exit 2."""
    from melanoma import config
    from melanoma.data.splits import load_splits

    root = image_set(tmp_path / "data", n=2, test_n=2)
    for p in (root / "test" / "Malignant").iterdir():
        p.write_bytes(b"")
    cfg = config.from_dict(tomllib.loads(bad_config))
    with pytest.raises(UserError, match="fewer than two readable classes"):
        load_splits(layout.discover(root), 32, dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, cache_dir=str(tmp_path / "cache"))))


def test_check_command_prints_summary(bad_set, capsys):
    assert main(["check", str(bad_set)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("preflight: ") and '"huge": 1' in out
    assert main(["check", str(bad_set), "--strict"]) == 2


@pytest.fixture(scope="module")
def bad_config(tiny_config) -> str:
    """The tiny config, for data given by --data-dir."""
    return tiny_config("tiny_bad", synthetic=None, defaults={"learning_rate": 1e-3},
                       evaluation={"bootstrap_resamples": 50})


@pytest.mark.slow
def test_run_over_every_skippable_bad_file(bad_set, bad_config, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(bad_config)
    args = ["run", "--config", str(config), "--data-dir", str(bad_set),
            "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "preflight: train" in err
    data = json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]["data"]
    assert data["skipped_images"] == 5
    assert data["preflight"]["warnings"]["huge"] == 1
    predictions = (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8")
    assert "test/Benign/na\\xefve.jpg" in predictions  # readable in UTF-8, not a crash
    assert main([*args, "--strict"]) == 2


def test_second_run_on_a_locked_folder_fails_fast_naming_the_holder(image_set, tmp_path, capsys):
    import subprocess
    import sys

    from melanoma.util import locks as lock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / lock.LOCK_NAME).write_text(json.dumps(
            {"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "then"}))
        # 8 a class: enough for the train/val split check, which comes before the lock
        root = image_set(tmp_path / "data", n=8, test_n=2)
        args = ["run", "--data-dir", str(root), "--out", str(out),
                "--models-dir", str(tmp_path / "models")]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"in use by another run (pid {holder.pid} on" in err and "started then" in err
        assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path):
    import subprocess
    import sys

    from melanoma.util import locks as lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / lock.LOCK_NAME).write_text(json.dumps(
        {"pid": dead.pid, "host": __import__("socket").gethostname(), "started": "x"}))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / lock.LOCK_NAME).write_text("")  # half-written: stale too
    with lock.hold(tmp_path, tmp_path / "m", tmp_path):
        assert json.loads((tmp_path / lock.LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            lock.acquire(tmp_path / "m")
    assert not list(tmp_path.rglob(lock.LOCK_NAME + "*"))
