"""The decoded-image cache equals today's decoding, is trusted only when complete, and
streams the same batches as the in-memory pipeline."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.data import cache as cache_mod
from melanoma.data.decode import load_images
from melanoma.data.loader import ArrayRows, CacheBatches
from melanoma.data.preprocessing import get_preprocessing
from melanoma.util.errors import UserError

SIZE = 32


def write_images(folder: Path, n: int = 14, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """JPEGs of several sizes, a grey PNG, an RGBA PNG and one unreadable file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        h, w = [(40, 50), (SIZE, SIZE), (20, 30), (90, 70)][i % 4]
        pixels = rng.integers(0, 256, (h, w, 3), np.uint8)
        path = folder / f"img_{i:02d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        files.append(path)
    grey = folder / "grey.png"
    Image.fromarray(rng.integers(0, 256, (45, 45), np.uint8), "L").save(grey)
    rgba = folder / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (33, 37, 4), np.uint8), "RGBA").save(rgba)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    files[3:3] = [grey, broken]
    files.append(rgba)
    labels = np.array([i % 2 for i in range(len(files))])
    return files, labels


@pytest.fixture
def data(tmp_path):
    return write_images(tmp_path / "images")


def counting(monkeypatch, fail_after: int | None = None) -> list:
    """Count calls of the per-image decode function (optionally fail after some)."""
    calls, real = [], cache_mod._try_load

    def wrapped(*args):
        calls.append(args[0])
        if fail_after is not None and len(calls) > fail_after:
            raise RuntimeError("simulated crash mid-build")
        return real(*args)

    monkeypatch.setattr(cache_mod, "_try_load", wrapped)
    return calls


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_cached_pixels_equal_load_images_byte_for_byte(data, tmp_path, interpolation):
    files, labels = data
    built = cache_mod.open_or_build(files, labels, SIZE, interpolation, tmp_path / "c")
    ref = load_images(files, labels, SIZE, interpolation)
    assert built.pixels.shape == ref.pixels.shape == (len(files) - 1, SIZE, SIZE, 3)
    assert built.pixels.tobytes() == ref.pixels.tobytes()
    assert built.labels.tolist() == ref.labels.tolist()
    assert built.files == ref.files and built.skipped == ref.skipped
    assert len(built.skipped) == 1 and "broken.jpg" in built.skipped[0][0]
    order = np.random.default_rng(1).permutation(len(built))
    assert np.array_equal(built.read_rows(order), ref.pixels[order])
    assert not built.pixels.flags.writeable


def test_reopening_decodes_nothing(data, tmp_path, monkeypatch):
    files, labels = data
    calls = counting(monkeypatch)
    first = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert len(calls) == len(files)
    calls.clear()
    again = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert calls == []
    assert again.path == first.path and np.array_equal(again.pixels, first.pixels)


def test_key_changes_with_size_interpolation_files_and_labels(data, tmp_path):
    files, labels = data
    fp = cache_mod.content_fingerprint(files)
    base = cache_mod.cache_key(fp, labels, SIZE, "nearest")
    assert base == cache_mod.cache_key(cache_mod.content_fingerprint(files), labels, SIZE,
                                       "nearest")
    assert base != cache_mod.cache_key(fp, labels, SIZE + 1, "nearest")
    assert base != cache_mod.cache_key(fp, labels, SIZE, "bilinear")
    assert base != cache_mod.cache_key(fp, 1 - labels, SIZE, "nearest")
    assert fp != cache_mod.content_fingerprint(files[1:])
    assert fp != cache_mod.content_fingerprint(files[::-1])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(files[0])  # same name, new bytes
    assert fp != cache_mod.content_fingerprint(files)
    a = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    b = cache_mod.open_or_build(files, labels, SIZE, "bilinear", tmp_path / "c")
    c = cache_mod.open_or_build(files[:5], labels[:5], SIZE, "nearest", tmp_path / "c")
    assert len({a.path, b.path, c.path}) == 3 and len(c) == 4


def test_concurrent_builders_decode_once(data, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    files, labels = data
    calls = counting(monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda _: cache_mod.open_or_build(files, labels, SIZE, "nearest",
                                                                tmp_path / "c"), range(2)))
    assert len(calls) == len(files) and built[0].path == built[1].path
    assert built[0].pixels.tobytes() == built[1].pixels.tobytes()


def test_too_little_disk_space_is_one_line_and_decodes_nothing(data, tmp_path, monkeypatch):
    files, labels = data
    calls = counting(monkeypatch)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    with pytest.raises(UserError) as caught:
        cache_mod.open_or_build(files, labels, 512, "nearest", tmp_path / "c")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "c") in message
    assert f"{(len(files) * 512 * 512 * 3 + 2**20) / 1e9:.2f} GB" in message
    assert calls == [] and not list((tmp_path / "c").glob("decoded-*"))


def test_crash_mid_build_leaves_no_trusted_cache(data, tmp_path, monkeypatch):
    files, labels = data
    counting(monkeypatch, fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    monkeypatch.undo()
    built = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert built.pixels.tobytes() == load_images(files, labels, SIZE).pixels.tobytes()


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from melanoma.data import cache
    real, marker = cache._try_load, Path(sys.argv[1])
    def slow(*args):
        marker.touch()
        time.sleep(0.2)
        return real(*args)
    cache._try_load = slow
    files = sorted(Path(sys.argv[2]).iterdir())
    cache.open_or_build(files, [i % 2 for i in range(len(files))], 32, "nearest", sys.argv[3],
                        workers=1)
""")


def test_sigkilled_build_leaves_no_trusted_cache_and_is_rebuilt(data, tmp_path):
    files, _ = data
    folder, out, marker = files[0].parent, tmp_path / "c", tmp_path / "decoding"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(marker), str(folder),
                              str(out)], env=env)
    deadline = time.monotonic() + 60
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child never started decoding"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(list(out.glob(".building-*"))) == 1 and not list(out.glob("decoded-*"))
    ordered = sorted(folder.iterdir())
    labels = [i % 2 for i in range(len(ordered))]
    built = cache_mod.open_or_build(ordered, labels, SIZE, "nearest", out)
    assert not list(out.glob(".building-*"))
    assert built.pixels.tobytes() == load_images(ordered, labels, SIZE).pixels.tobytes()


def test_leftovers_of_other_keys_removed_unless_being_built(data, tmp_path):
    files, labels = data
    out = tmp_path / "c"
    abandoned, busy = out / ".building-aaaaaaaaaaaaaaaa-x1", out / ".building-bbbbbbbbbbbbbbbb-x2"
    for folder in (abandoned, busy):
        folder.mkdir(parents=True)
        (folder / cache_mod.PIXELS).write_bytes(b"partial")
    with cache_mod._key_lock(out, "bbbbbbbbbbbbbbbb") as held:
        assert held
        cache_mod.open_or_build(files, labels, SIZE, "nearest", out)
    assert not abandoned.exists() and busy.exists()


def test_damaged_cache_is_not_trusted(data, tmp_path, monkeypatch):
    files, labels = data
    built = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    with open(built.path / cache_mod.PIXELS, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 5)
    assert cache_mod.open_cache(built.path, built.key, files, labels) is None
    calls = counting(monkeypatch)
    rebuilt = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    assert len(calls) == len(files) and rebuilt.path == built.path
    assert rebuilt.pixels.tobytes() == load_images(files, labels, SIZE).pixels.tobytes()
    meta = json.loads((rebuilt.path / cache_mod.META).read_text())
    assert meta["key"] == built.key and len(meta["kept_index"]) == len(rebuilt)


@pytest.mark.parametrize("size", [SIZE, 160])  # 160: sums beyond float32's exact integers
def test_channel_mean_equals_in_memory_fit_exactly(data, tmp_path, size):
    files, labels = data
    built = cache_mod.open_or_build(files, labels, size, "bilinear", tmp_path / "c")
    pixels = np.asarray(built.pixels)
    rng = np.random.default_rng(3)
    for indices in (None, np.sort(rng.choice(len(built), 9, replace=False)),
                    rng.permutation(len(built))[:7]):
        chosen = pixels if indices is None else pixels[indices]
        for chunk in (1, 3, None):
            for name in ("featurewise", "native", "samplewise"):
                expected = get_preprocessing(name).fit(chosen)
                got = cache_mod.fit_preprocessing(get_preprocessing(name), built, indices, chunk)
                assert got == expected  # the mean tuples are equal bit for bit
            raw = chosen.reshape(-1, 3).astype(np.float64).sum(0) / (chosen.size // 3)
            assert np.array_equal(built.channel_mean(indices, chunk), raw)


def test_loader_batches_from_the_cache_equal_those_from_its_pixels(data, tmp_path):
    """CacheBatches reading rows from the file (in runs, shuffled, flipped) = the same
    batches over the pixels in memory, for two epochs."""
    files, labels = data
    built = cache_mod.open_or_build(files, labels, SIZE, "nearest", tmp_path / "c")
    pixels = np.asarray(built.pixels)
    subset = np.array([0, 2, 3, 5, 6, 7, 9, 10, 11, 12, 14])
    for axes in ((), (2,), (1, 2)):
        got = CacheBatches(built, subset, built.labels[subset], 4, shuffle=True, seed=7,
                           flip_axes=axes, repeat=True)
        ref = CacheBatches(ArrayRows(pixels), subset, built.labels[subset], 4, shuffle=True,
                           seed=7, flip_axes=axes, repeat=True)
        for i in range(6):  # two epochs of 4 + 4 + 3
            (gx, gy), (rx, ry) = got[i], ref[i]
            assert gx.shape == ((3 if i % 3 == 2 else 4), SIZE, SIZE, 3)
            assert np.array_equal(gx, rx) and np.array_equal(gy, ry)


def test_file_digest_is_read_once_and_follows_a_rewrite(tmp_path, monkeypatch):
    """The data key, the decoded cache's key and the training fingerprint share one read of
    each file; a file replaced (same size, new bytes, as an atomic rewrite) is read again."""
    import hashlib
    import os

    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 100)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: reads.append(p) or real_open(p, *a, **k))
    first = cache_mod.file_sha256(path)
    assert cache_mod.file_sha256(path) == first == hashlib.sha256(b"x" * 100).digest()
    assert len(reads) == 1
    (tmp_path / "new").write_bytes(b"y" * 100)
    os.replace(tmp_path / "new", path)
    assert cache_mod.file_sha256(path) == hashlib.sha256(b"y" * 100).digest()
    assert len(reads) == 2
