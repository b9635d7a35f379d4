"""Defects a hostile-input pass found: each reproduced, then fixed. The decoded-image cache
verifies its pixels, no output lands inside the data, a damaged bench baseline is a one-line
error, unusable places are one line, `check` counts unreadable classes, and names never
become spreadsheet formulas or break a Markdown table. No training: library calls, saved
predictions and tiny images."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.data import cache as cache_mod
from melanoma.data.decode import load_images
from melanoma.util.errors import UserError

SIZE = 32


def jpeg_bytes(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def images(folder: Path, n: int = 6) -> tuple[list[Path], np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = folder / f"img_{i}.jpg"
        path.write_bytes(jpeg_bytes(i))
        files.append(path)
    return files, np.arange(n) % 2


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("melanoma-bench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------
# 1. the decoded-image cache's pixels are verified

def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def test_overwritten_cache_pixels_are_detected_and_rebuilt(tmp_path, caplog):
    files, labels = images(tmp_path / "img")
    built = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    pixels = built.path / cache_mod.PIXELS
    size = pixels.stat().st_size
    row = 3
    _overwrite(pixels, built.data_offset + row * built.row_bytes + 100, b"\x00\xff" * 50)
    assert pixels.stat().st_size == size  # same size, header and meta.json
    again = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert again.read_rows(np.arange(len(again))).tobytes() == \
        load_images(files, labels, SIZE).pixels.tobytes()
    assert "checksum" in caplog.text


def test_cache_changed_after_opening_refuses_rows_in_one_line(tmp_path):
    files, labels = images(tmp_path / "img")
    built = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    built.read_rows([0, 1, 2])
    _overwrite(built.path / cache_mod.PIXELS, built.data_offset + 2 * built.row_bytes, b"\x01")
    assert built.read_rows([0, 1]).shape == (2, SIZE, SIZE, 3)  # untouched rows still read
    with pytest.raises(UserError, match=r"img_2\.jpg.*checksum.*rerun") as error:
        built.read_rows([1, 2])
    assert "\n" not in str(error.value) and str(built.path) in str(error.value)
    rebuilt = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert rebuilt.read_rows([2]).tobytes() == load_images(files[2:3], [0], SIZE).pixels.tobytes()


def test_cache_checksums_are_recorded_per_row(tmp_path):
    files, labels = images(tmp_path / "img")
    files.insert(2, tmp_path / "img" / "broken.jpg")
    files[2].write_bytes(b"not an image")
    labels = np.arange(len(files)) % 2
    built = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    meta = json.loads((built.path / cache_mod.META).read_text())
    assert len(meta["row_crc32"]) == len(built) == len(files) - 1
    assert np.array_equal(built.pixels, load_images(files, labels, SIZE).pixels)
