"""A second hostile pass: image formats and bit depths, config files of any size, kind and
encoding, pipes, environment variables, the importer, the report and the gate. Each case is
one line and exit 2, a counted skip, or the right result; never a traceback, a hang, a
silent wrong result or a write outside the folders named. docs/robustness.md lists them.
No training: library calls, the CLI in-process, and two short subprocesses for pipes."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.cli.main import main
from melanoma.data import preflight
from melanoma.data.decode import load_images
from melanoma.util.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def decoded(path: Path, size: int = 8) -> np.ndarray | None:
    loaded = load_images([path], [0], size)
    return loaded.pixels[0] if len(loaded.pixels) else None


def skipped_reason(path: Path) -> str:
    loaded = load_images([path], [0], 8)
    assert len(loaded.pixels) == 0 and len(loaded.skipped) == 1
    return loaded.skipped[0][1]


# ----------------------------------------------------------------------------------------
# images: every format the docs name decodes faithfully, or is skipped by name and counted

RED = np.zeros((40, 40, 3), np.uint8)
RED[..., 0], RED[..., 1] = 200, 100


def test_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path):
    grey = np.full((40, 40), 32896, np.uint16)  # 128 * 257: mid grey
    grey[:20] = 65535
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    pixels = decoded(tmp_path / "g16.png")
    assert pixels[0, 0].tolist() == [255] * 3 and pixels[7, 0].tolist() == [128] * 3


def test_16_bit_grey_tiff_is_scaled_too(tmp_path):
    Image.fromarray(np.full((40, 40), 257 * 60, np.uint16)).save(tmp_path / "g16.tif")
    assert decoded(tmp_path / "g16.tif")[0, 0].tolist() == [60] * 3


def test_48_bit_rgb_png_keeps_its_colour(tmp_path):
    import zlib

    def chunk(kind, data):
        import struct
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    import struct
    rows = b"".join(b"\0" + struct.pack(">HHH", 200 * 257, 100 * 257, 0) * 16 for _ in range(16))
    (tmp_path / "rgb48.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    assert decoded(tmp_path / "rgb48.png")[0, 0].tolist() == [200, 100, 0]


@pytest.mark.parametrize("mode, expect", [("I", "32-bit integer"), ("F", "floating-point")])
def test_32_bit_and_float_tiffs_are_skipped_by_name(tmp_path, mode, expect):
    value = np.full((40, 40), 70000 if mode == "I" else 0.5,
                    np.int32 if mode == "I" else np.float32)
    Image.fromarray(value).save(tmp_path / "wide.tif")
    assert expect in skipped_reason(tmp_path / "wide.tif")


def test_grey_with_alpha_png_is_grey(tmp_path):
    Image.fromarray(RED).convert("LA").save(tmp_path / "la.png")
    pixel = decoded(tmp_path / "la.png")[0, 0]
    assert len(set(pixel.tolist())) == 1 and 100 < pixel[0] < 140  # its luminance, as RGB


def test_palette_png_with_transparency_keeps_its_colours(tmp_path):
    Image.fromarray(RED).convert("P").save(tmp_path / "p.png", transparency=0)
    assert decoded(tmp_path / "p.png")[0, 0].tolist() == \
        np.asarray(Image.fromarray(RED).convert("P").convert("RGB"))[0, 0].tolist()


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert decoded(tmp_path / "a.gif")[0, 0].tolist() == [10] * 3


@pytest.mark.parametrize("suffix", ["tif", "webp", "bmp"])
def test_tiff_webp_and_bmp_decode_exactly(tmp_path, suffix):
    path = tmp_path / f"a.{suffix}"
    Image.fromarray(RED).save(path, **({"lossless": True} if suffix == "webp" else {}))
    assert decoded(path)[0, 0].tolist() == [200, 100, 0]


def test_cmyk_tiff_is_converted(tmp_path):
    Image.fromarray(np.zeros((40, 40, 4), np.uint8), "CMYK").save(tmp_path / "c.tif")
    assert decoded(tmp_path / "c.tif")[0, 0].tolist() == [255] * 3  # no ink: white


def test_png_named_jpg_decodes_by_content(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(RED).save(buffer, "PNG")
    (tmp_path / "x.jpg").write_bytes(buffer.getvalue())
    assert decoded(tmp_path / "x.jpg")[0, 0].tolist() == [200, 100, 0]


def test_truncated_png_is_skipped_with_its_reason(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(
        buffer, "PNG")
    (tmp_path / "t.png").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    assert "truncated" in skipped_reason(tmp_path / "t.png")


def test_exif_orientation_is_ignored_as_keras_load_img_does(tmp_path):
    top_black = np.concatenate([np.zeros((20, 40, 3), np.uint8),
                                np.full((20, 40, 3), 255, np.uint8)])
    img = Image.fromarray(top_black)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    pixels = decoded(tmp_path / "r.jpg")
    assert pixels[0, 0].max() < 30 and pixels[7, 0].min() > 225  # stored rows, unrotated


def test_preflight_counts_a_32_bit_tiff_among_the_readable_headers(tmp_path):
    Image.fromarray(np.full((40, 40), 7, np.int32)).save(tmp_path / "i.tif")
    assert preflight.header_problem(tmp_path / "i.tif") is None  # decoding skips it by name


# ----------------------------------------------------------------------------------------
# config files of any size, kind and encoding: one line, fast

def _config_error(tmp_path, one_line_error, name: str, content: bytes | None, *needles: str):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["prepare", "--config", str(path), "--data-dir", str(tmp_path)]) == 2
    return one_line_error(*needles)


def test_utf16_config_is_one_line(tmp_path, one_line_error):
    _config_error(tmp_path, one_line_error, "c.toml", 'name = "x"\n'.encode("utf-16"), "c.toml")


def test_config_with_a_byte_order_mark_is_read(tmp_path):
    from melanoma.config.files import read_raw

    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbf" + b'name = "bom"\n')
    assert read_raw(tmp_path / "c.toml") == {"name": "bom"}


def test_binary_config_is_one_line(tmp_path, one_line_error):
    _config_error(tmp_path, one_line_error, "c.yaml", bytes(range(256)) * 4, "c.yaml")


def test_50_mb_config_is_refused_without_reading_it(tmp_path, one_line_error):
    path = tmp_path / "big.toml"
    with open(path, "wb") as handle:
        handle.truncate(50 * 2**20)  # sparse: no 50 MB written to the disk
    _config_error(tmp_path, one_line_error, "big.toml", None, "52,428,800 bytes")


def test_deeply_nested_toml_and_yaml_are_one_line(tmp_path, one_line_error):
    _config_error(tmp_path, one_line_error, "deep.toml", b"a = " + b"[" * 50000 + b"]" * 50000,
                  "deep.toml")
    _config_error(tmp_path, one_line_error, "deep.yaml", b"a: " + b"[" * 50000 + b"]" * 50000,
                  "deep.yaml")


def test_yaml_anchor_bomb_is_refused(tmp_path, one_line_error):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    _config_error(tmp_path, one_line_error, "bomb.yaml", "\n".join(lines).encode(), "anchors")


def test_config_fifo_and_folder_do_not_hang(tmp_path, one_line_error):
    os.mkfifo(tmp_path / "fifo.toml")
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(
        ["prepare", "--config", str(tmp_path / "fifo.toml"), "--data-dir", str(tmp_path)])),
        daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        os.close(os.open(tmp_path / "fifo.toml", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("blocked on a FIFO config")
    assert result["code"] == 2
    one_line_error("not a regular file")
    (tmp_path / "dir.toml").mkdir()
    _config_error(tmp_path, one_line_error, "dir.toml", None, "not a regular file")


def test_dev_zero_as_a_config_is_refused(tmp_path, one_line_error):
    assert main(["prepare", "--config", "/dev/zero", "--data-dir", str(tmp_path)]) == 2
    one_line_error("/dev/zero")


def test_yaml_list_at_the_top_is_one_line(tmp_path, one_line_error):
    _config_error(tmp_path, one_line_error, "l.yaml", b"- a\n- b\n", "mapping at the top level")


# ----------------------------------------------------------------------------------------
# pipes and signals: `| head` and a closed stdout end quietly

def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "melanoma.cli.main", *args], env=env,
                            stderr=subprocess.PIPE, **kwargs)


def _tiny_set(root: Path) -> Path:
    for split in ("train", "test"):
        for k, cls in enumerate(("Benign", "Malignant")):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((36, 36, 3), 40 * i + 100 * k, np.uint8)).save(
                    root / split / cls / f"{i}.jpg")
    return root


def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    data = _tiny_set(tmp_path / "d")
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited: every write is EPIPE
    proc = _cli("check", str(data), stdout=write)
    os.close(write)
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_closed_stdout_is_quiet(tmp_path):
    data = _tiny_set(tmp_path / "d")
    proc = _cli("check", str(data), stdout=subprocess.DEVNULL, close_fds=True,
                preexec_fn=lambda: os.close(1))
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err


# ----------------------------------------------------------------------------------------
# environment variables

def test_cache_variable_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    from melanoma.data.synthetic import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MELANOMA_DATA_CACHE", "~/cache")
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / "home" / "cache"  # never a folder named "~"


def test_empty_cache_variable_means_the_default(tmp_path, monkeypatch):
    from melanoma.data.synthetic import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MELANOMA_DATA_CACHE", "")
    assert default_cache_dir() == tmp_path / ".cache" / "melanoma-bench"


# ----------------------------------------------------------------------------------------
# the importer

def _import_args(tmp_path: Path, labels: bytes) -> list[str]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(images / f"ISIC_{i:07d}.jpg")
    (tmp_path / "gt.csv").write_bytes(labels)
    return ["import", "--labels", str(tmp_path / "gt.csv"), "--images", str(images),
            "--out", str(tmp_path / "out")]


GROUND_TRUTH = "image_id,melanoma,seborrheic_keratosis\n" + "".join(
    f"ISIC_{i:07d},{i % 2}.0,0.0\n" for i in range(10))


@pytest.mark.parametrize("case, content", [
    ("utf-16", GROUND_TRUTH.encode("utf-16")),
    ("empty", b""),
    ("binary", bytes(range(256)) * 8),
    ("header only", b"image_id,melanoma,seborrheic_keratosis\n"),
])
def test_importer_refuses_unreadable_labels_in_one_line(tmp_path, one_line_error, case, content):
    assert main(_import_args(tmp_path, content)) == 2
    one_line_error()
    assert not (tmp_path / "out").exists()


def test_importer_reads_labels_with_a_byte_order_mark(tmp_path, capsys):
    assert main(_import_args(tmp_path, b"\xef\xbb\xbf" + GROUND_TRUTH.encode())) == 0
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 10


def test_importer_never_follows_an_image_id_out_of_its_folders(tmp_path, one_line_error):
    secret = tmp_path / "secret.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    labels = GROUND_TRUTH + "../secret,1.0,0.0\n/etc/passwd,0.0,0.0\n"
    code = main(_import_args(tmp_path, labels.encode()))
    out = tmp_path / "out"
    if code == 0:
        placed = {p.name for p in out.rglob("*") if p.is_file()}
        assert "secret.jpg" not in placed and "passwd" not in placed
    else:
        one_line_error()
    assert {p.name for p in tmp_path.iterdir()} <= {"gt.csv", "images", "out", "secret.jpg"}


def test_importer_with_too_few_images_to_split_is_one_line(tmp_path, one_line_error):
    args = _import_args(tmp_path, GROUND_TRUTH.encode())
    (tmp_path / "gt.csv").write_text("\n".join(GROUND_TRUTH.splitlines()[:4]) + "\n")
    assert main(args) == 2
    one_line_error("cannot split")


# ----------------------------------------------------------------------------------------
# the report and the gate

@pytest.fixture
def saved_run(tmp_path) -> Path:
    import pandas as pd

    from melanoma.evaluation.rows import EvalSettings
    from melanoma.reporting import run_report

    y = np.repeat([0, 1], 10)
    frame = pd.DataFrame({"variant": "a", "file": [f"test/x/{i}.jpg" for i in range(20)],
                          "label": y, "prob_malignant": np.linspace(0.05, 0.95, 20)})
    run_report.write_run(tmp_path / "run", frame, {"a": {"spec": "a"}}, {}, {"seed": 1}, None,
                     EvalSettings(seed=1, bootstrap_resamples=10))
    return tmp_path / "run"


def test_report_on_an_infinite_probability_is_one_line(saved_run, one_line_error):
    path = saved_run / "predictions.csv"
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[-1] = "inf"
    path.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    assert main(["report", str(saved_run)]) == 2
    one_line_error("predictions.csv", "line 4")


def test_report_on_a_fifo_predictions_file_does_not_hang(saved_run, one_line_error):
    (saved_run / "predictions.csv").unlink()
    os.mkfifo(saved_run / "predictions.csv")
    assert main(["report", str(saved_run)]) == 2
    one_line_error("predictions.csv")


def test_report_on_a_file_or_missing_folder_is_one_line(tmp_path, one_line_error):
    (tmp_path / "f").write_text("x")
    for target in (tmp_path / "f", tmp_path / "missing"):
        assert main(["report", str(target)]) == 2
        one_line_error(str(target))
    assert not (tmp_path / "missing").exists()


def test_gate_baseline_that_is_a_fifo_or_folder_does_not_hang(saved_run, tmp_path, one_line_error):
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[[variants]]\nname = "a"\n')
    for kind in ("fifo", "folder"):
        baseline = tmp_path / f"{kind}.json"
        os.mkfifo(baseline) if kind == "fifo" else baseline.mkdir()
        assert main(["bench", "--config", str(config), "--baseline", str(baseline),
                     "--predictions", str(saved_run / "predictions.csv")]) == 2
        one_line_error(str(baseline))


def test_gate_on_predictions_out_of_range_is_one_line(saved_run, tmp_path, one_line_error):
    path = saved_run / "predictions.csv"
    path.write_text(path.read_text().replace("0.05,", "1.5,", 1).replace(",0.05\n", ",1.5\n"))
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[[variants]]\nname = "a"\n')
    assert main(["bench", "--config", str(config), "--baseline", str(tmp_path / "b.json"),
                 "--predictions", str(path), "--update-baseline"]) == 2
    one_line_error("predictions.csv")
    assert not (tmp_path / "b.json").exists()


def test_gate_config_bomb_is_one_line(saved_run, tmp_path, capsys):
    from melanoma.runs.regression import config_hash

    lines = ['name: c', 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines))
    with pytest.raises(UserError, match="anchors"):
        config_hash(tmp_path / "bomb.yaml")
