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

from melanoma.cli.main import main
from melanoma.data import cache as cache_mod
from melanoma.data.decode import load_images
from melanoma.util.errors import UserError

SIZE = 32
LEGACY = Path(__file__).parent / "fixtures" / "legacy"


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


def isic_download(folder: Path, n: int = 10) -> tuple[Path, Path]:
    """``folder/images`` with ``n`` ISIC-named JPEGs and ``folder/gt.csv``, their ISIC 2017
    ground truth (every other one a melanoma): what `import` reads."""
    images_dir = folder / "images"
    images_dir.mkdir()
    for i in range(n):
        (images_dir / f"ISIC_{i:07d}.jpg").write_bytes(jpeg_bytes(i))
    labels = folder / "gt.csv"
    labels.write_text("image_id,melanoma,seborrheic_keratosis\n" + "".join(
        f"ISIC_{i:07d},{i % 2}.0,0.0\n" for i in range(n)))
    return images_dir, labels


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


def data_set(root: Path, n: int = 8, test_n: int = 3) -> Path:
    """``root/{train,test}/{Benign,Malignant}`` with small JPEGs."""
    for split, count in (("train", n), ("test", test_n)):
        for k, cls in enumerate(("Benign", "Malignant")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{split}_{k}_{i}.jpg").write_bytes(jpeg_bytes(100 * k + i, 36))
    return root


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ----------------------------------------------------------------------------------------
# 2. no output, models or cache folder inside the data folder

@pytest.fixture
def data(tmp_path, tiny_config):
    root = data_set(tmp_path / "data")
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config("hostile2", synthetic=None))
    return root, config


@pytest.mark.parametrize("flag, inside", [("--out", "train/Benign/rep"),
                                           ("--out", "test"), ("--out", "."),
                                           ("--models-dir", "test/Malignant/m"),
                                           ("--models-dir", "train/x")])
def test_run_refuses_outputs_inside_the_data(data, tmp_path, one_line_error, flag, inside):
    root, config = data
    before = tree(root)
    other = "--models-dir" if flag == "--out" else "--out"
    args = ["run", "--config", str(config), "--data-dir", str(root), flag, str(root / inside),
            other, str(tmp_path / "elsewhere")]
    assert main(args) == 2
    one_line_error(flag, "inside the data folder")
    assert tree(root) == before and not (tmp_path / "elsewhere").exists()


def test_other_folders_under_the_data_root_are_not_data(data):
    from melanoma.data import layout

    root, _ = data
    layout.refuse_inside_data(root, {"--out": root / "reports", "--models-dir": root.parent})
    with pytest.raises(UserError, match="inside the data folder"):
        layout.refuse_inside_data(root, {"--out": root / "x" / ".." / "TRAIN" / ".." / "train"})


def test_cache_folder_inside_the_data_is_refused(data, tmp_path, monkeypatch, one_line_error):
    root, config = data
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(root / "train" / "cache"))
    before = tree(root)
    assert main(["prepare", "--config", str(config), "--data-dir", str(root)]) == 2
    one_line_error("MELANOMA_DATA_CACHE", "inside the data folder")
    monkeypatch.delenv("MELANOMA_DATA_CACHE")
    assert main(["prepare", "--config", str(config), "--data-dir", str(root), "--set",
                 f"data.cache_dir={root / 'test' / 'Benign'}"]) == 2
    one_line_error("cache_dir", "inside the data folder")
    assert tree(root) == before


def test_evaluate_audit_and_tune_refuse_out_inside_the_data(data, tmp_path, one_line_error):
    root, config = data
    before = tree(root)
    model = str(LEGACY / "tiny_efficientnet_samplewise.h5")
    assert main(["evaluate", model, "--data-dir", str(root / "test"),
                 "--out", str(root / "test" / "Benign" / "eval")]) == 2
    one_line_error("--out", "inside the data folder")
    assert main(["evaluate", model, "--data-dir", str(root),
                 "--out", str(root / "train")]) == 2
    one_line_error("--out", "inside the data folder")
    assert main(["audit", str(root), "--out", str(root / "test" / "audit")]) == 2
    one_line_error("--out", "inside the data folder")
    assert main(["tune", "--data-dir", str(root), "--out", str(root / "train" / "t")]) == 2
    one_line_error("--out", "inside the data folder")
    assert tree(root) == before


def test_report_refuses_out_inside_the_runs_data(data, tmp_path, one_line_error):
    import pandas as pd

    from melanoma.evaluation.rows import EvalSettings
    from melanoma.reporting import run_report

    root, _ = data
    y = np.repeat([0, 1], 10)
    frame = pd.DataFrame({"variant": "a", "file": [f"test/x/{i}.jpg" for i in range(20)],
                          "label": y, "prob_malignant": np.linspace(0.1, 0.9, 20)})
    run = tmp_path / "run"
    run_report.write_run(run, frame, {"a": {"spec": "a"}}, {}, {"seed": 1, "data": {
        "root": str(root)}}, None, EvalSettings(seed=1, bootstrap_resamples=10))
    before = tree(root)
    assert main(["report", str(run), "--out", str(root / "train" / "Benign" / "rep")]) == 2
    one_line_error("--out", "inside the data folder")
    assert tree(root) == before


def test_import_into_its_images_folder_never_reads_its_copies(tmp_path, capsys):
    images_dir, labels = isic_download(tmp_path)
    args = ["import", "--labels", str(labels), "--images", str(images_dir),
            "--out", str(images_dir / "imported")]
    assert main(args) == 0
    manifest = (images_dir / "imported" / "manifest.csv").read_text()
    assert main(args) == 0  # again: the copies under imported/ are not found as sources
    assert (images_dir / "imported" / "manifest.csv").read_text() == manifest


# ----------------------------------------------------------------------------------------
# 3. a damaged bench baseline is a one-line error naming the file and the field

def seed_predictions(seeds=range(5)):
    import pandas as pd

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    frames = [pd.DataFrame({"variant": "a", "seed": s, "file": [f"test/{i}.jpg" for i in
                                                                range(60)],
                            "label": y, "prob_malignant": 1 / (1 + np.exp(
                                -(rng.normal(0, 1, 60) + (1.5 + rng.normal(0, 0.1)) * (2 * y - 1))))})
              for s in seeds]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def bench_files(tmp_path):
    config = tmp_path / "saved.toml"
    config.write_text('name = "saved"\nseed = 1\n[[variants]]\nname = "a"\n')
    predictions = tmp_path / "predictions.csv"
    seed_predictions().to_csv(predictions, index=False)
    baseline = tmp_path / "saved.json"
    assert main(["bench", "--config", str(config), "--baseline", str(baseline),
                 "--predictions", str(predictions), "--update-baseline"]) == 0
    return ["bench", "--config", str(config), "--baseline", str(baseline),
            "--predictions", str(predictions)], baseline


def _set(path: tuple, value):
    def apply(doc):
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value
    return apply


BASELINE_DAMAGE = {
    "nan auc": (_set(("variants", "a", "per_seed", "auc", 0), float("nan")), "auc"),
    "huge auc": (_set(("variants", "a", "per_seed", "auc", 1), 1e308), "auc"),
    "negative auc": (_set(("variants", "a", "per_seed", "auc", 1), -1e308), "auc"),
    "auc 9": (_set(("variants", "a", "per_seed", "auc", 2), 9.0), "auc"),
    "auc text": (_set(("variants", "a", "per_seed", "auc", 2), "0.9"), "auc"),
    "no variants": (_set(("variants",), {}), "variants"),
    "variants a list": (_set(("variants",), [1]), "variants"),
    "no gated metrics": (_set(("gated_metrics",), []), "gated_metrics"),
    "unknown gated metric": (_set(("gated_metrics",), ["auc", "acuracy"]), "acuracy"),
    "gated metric missing": (lambda d: d["variants"]["a"]["per_seed"].pop("brier"), "brier"),
    "alpha 2": (_set(("family_alpha",), 2), "family_alpha"),
    "seeds short": (_set(("variants", "a", "per_seed", "auc"), [0.8, 0.9]), "auc"),
    "n text": (_set(("variants", "a", "n"), "sixty"), "n"),
}


@pytest.mark.parametrize("case", BASELINE_DAMAGE)
def test_damaged_baseline_is_one_line_naming_file_and_field(bench_files, capsys, one_line_error, case):
    args, baseline = bench_files
    damage, field = BASELINE_DAMAGE[case]
    doc = json.loads(baseline.read_text())
    damage(doc)
    baseline.write_text(json.dumps(doc))  # NaN and 1e308 written as JSON allows them
    capsys.readouterr()
    assert main(args) == 2
    one_line_error(str(baseline), field)


@pytest.mark.parametrize("content", [b"", b'{"format": "melanoma-bench seed baseline 1", "var',
                                     b"[1, 2]", b"\xff\xfe\x00binary", b"null"])
def test_empty_truncated_or_mistyped_baseline_is_one_line(bench_files, capsys, one_line_error, content):
    args, baseline = bench_files
    baseline.write_bytes(content)
    capsys.readouterr()
    assert main(args) == 2
    one_line_error(str(baseline))


def test_sound_baseline_still_passes(bench_files, capsys):
    args, _ = bench_files
    assert main(args) == 0
    assert "PASS" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------
# 4. unusable places are one line, not a traceback

def test_cache_variable_naming_a_file_is_one_line(data, tmp_path, monkeypatch, one_line_error):
    root, config = data
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "afile"))
    assert main(["prepare", "--config", str(config), "--data-dir", str(root)]) == 2
    one_line_error(str(tmp_path / "afile"), "MELANOMA_DATA_CACHE")
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "afile" / "below"))
    assert main(["prepare", "--config", str(config)]) == 2  # the generated set's folder too
    one_line_error("MELANOMA_DATA_CACHE")


def test_unreachable_home_is_one_line(data, monkeypatch, one_line_error):
    root, config = data
    monkeypatch.delenv("MELANOMA_DATA_CACHE")
    monkeypatch.setenv("HOME", "/proc/no-such-home")
    assert main(["prepare", "--config", str(config), "--data-dir", str(root)]) == 2
    one_line_error("/proc/no-such-home/.cache/melanoma-bench", "MELANOMA_DATA_CACHE")


def test_read_only_cache_folder_is_one_line(data, tmp_path, monkeypatch, one_line_error):
    import errno
    import os

    root, config = data
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(cache))
    if os.geteuid() == 0:  # root ignores modes: refuse as a read-only folder would
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(cache / ".lock"))
        monkeypatch.setattr(cache_mod, "_key_lock", refuse)
    else:
        cache.chmod(0o555)
    assert main(["prepare", "--config", str(config), "--data-dir", str(root)]) == 2
    one_line_error(str(cache), "Permission denied", "MELANOMA_DATA_CACHE")


@pytest.mark.parametrize("place", ["/proc/melanoma-import", "afile/below"])
def test_import_into_an_unusable_place_is_one_line(tmp_path, one_line_error, place):
    images_dir, labels = isic_download(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = place if place.startswith("/") else str(tmp_path / place)
    assert main(["import", "--labels", str(labels), "--images", str(images_dir),
                 "--out", out]) == 2
    one_line_error(out)


def _long(tmp_path: Path) -> Path:
    return tmp_path.joinpath(*["d" * 200] * 20)  # about 4,100 bytes with the temp prefix


def test_run_with_a_4000_character_out_is_one_line_before_any_work(data, tmp_path, one_line_error):
    root, config = data
    out = _long(tmp_path)
    assert main(["run", "--config", str(config), "--data-dir", str(root), "--out", str(out),
                 "--models-dir", str(tmp_path / "models")]) == 2
    one_line_error("--out", "path limit")
    assert not (tmp_path / "models").exists() and not (tmp_path / ("d" * 200)).exists()


def test_evaluate_and_report_with_a_4000_character_out_are_one_line(tmp_path, one_line_error):
    out = _long(tmp_path)
    assert main(["evaluate", str(LEGACY / "tiny_efficientnet_samplewise.h5"), "--data-dir",
                 str(LEGACY / "images"), "--out", str(out)]) == 2
    one_line_error("--out", "path limit")
    assert main(["report", str(tmp_path), "--out", str(out)]) == 2
    one_line_error("--out", "path limit")
    assert not (tmp_path / ("d" * 200)).exists()


# ----------------------------------------------------------------------------------------
# 5. `check` exits 2 on a class with no readable image; a failed run leaves no empty --out

def test_check_fails_on_a_class_without_a_readable_image(data, one_line_error):
    root, _ = data
    for path in (root / "test" / "Malignant").iterdir():
        path.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert main(["check", str(root)]) == 2
    one_line_error("test/Malignant", "no readable image", "3 unreadable")


def test_run_failing_on_its_data_leaves_no_empty_out(data, tmp_path, one_line_error):
    root, config = data
    for path in (root / "test" / "Malignant").iterdir():
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])  # header reads
    out = tmp_path / "new-out"
    assert main(["run", "--config", str(config), "--data-dir", str(root), "--out", str(out),
                 "--models-dir", str(tmp_path / "models")]) == 2
    one_line_error("fewer than two readable classes")
    assert not out.exists() and not (tmp_path / "models").exists()


# ----------------------------------------------------------------------------------------
# 6. names never become spreadsheet formulas, nor break results.md's table

def _saved_run(out: Path, names) -> Path:
    import pandas as pd

    from melanoma.evaluation.rows import EvalSettings
    from melanoma.reporting import run_report

    y = np.repeat([0, 1], 10)
    rng = np.random.default_rng(0)
    frame = pd.concat([pd.DataFrame({"variant": name, "file": [f"test/x/{i}.jpg" for i in
                                                               range(20)],
                                     "label": y, "prob_malignant": np.clip(
                                         0.3 * y + rng.uniform(0, 0.7, 20), 0, 1)})
                       for name in names], ignore_index=True)
    run_report.write_run(out, frame, {n: {"spec": "samplewise"} for n in names}, {}, {"seed": 1},
                     None, EvalSettings(seed=1, bootstrap_resamples=10))
    return out


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+SUM(1,2)", "-2+3", "@cmd", "\tTAB"]


def test_formula_names_are_neutralised_in_every_csv_and_read_back(tmp_path, capsys):
    import csv

    run = _saved_run(tmp_path / "run", [*FORMULAS, "plain"])
    for name in ("results.csv", "predictions.csv"):
        with open(run / name, newline="", encoding="utf-8") as handle:
            cells = [c for row in csv.reader(handle) for c in row]
        assert not [c for c in cells if c and c[0] in "=+@\t\r"], name
        assert not [c for c in cells if c.startswith("-") and not _is_number(c)], name
        assert "'=HYPERLINK" in "".join(cells)
        assert any(_is_number(c) and c.startswith("0.") for c in cells)  # numbers untouched
    assert main(["report", str(run), "--out", str(tmp_path / "again")]) == 0
    rows = json.loads((tmp_path / "again" / "results.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {*FORMULAS, "plain"}  # read back as named


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_pipes_and_html_in_names_keep_results_md_a_table(tmp_path):
    run = _saved_run(tmp_path / "run", ["a|b", "<script>alert(1)</script>", "plain"])
    md = (run / "results.md").read_text(encoding="utf-8")
    assert "<script>" not in md
    for table in md.split("\n\n"):
        lines = [line for line in table.splitlines() if line.startswith("|")]
        if lines:  # every line of a table has as many unescaped cell bars as its header
            bars = {line.replace("\\|", "").count("|") for line in lines}
            assert len(bars) == 1, table
    assert "a\\|b" in md
