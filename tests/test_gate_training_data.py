"""`melanoma-bench bench` compares the run's training data with the baseline's: a fingerprint
of the train/ files' names, bytes and labels (results.json: data.train_fingerprint). Tiny
generated data and fake predictions; one tiny real run (slow) checks results.json has it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma import config
from melanoma.cli.main import main
from melanoma.data import layout
from melanoma.data.splits import labelled_fingerprint, limited, resolve_data_dir
from melanoma.data.synthetic import SyntheticSpec, generate
from melanoma.runs import regression

ROOT = Path(__file__).resolve().parents[1]
TINY = SyntheticSpec(n_train_per_class=5, n_test_per_class=2, image_size=16, seed=11)
CONFIG = """
name = "saved"
seed = 1
[[variants]]
name = "a"
"""
DIFFERS = "the training data differ from the baseline's"


def train_fingerprint(root: Path) -> str:
    found = layout.discover(root)
    return labelled_fingerprint(found.train.files, found.train.labels)


def flipped_copy(source: Path, target: Path, per_class: int = 1) -> Path:
    """A copy of ``source`` with ``per_class`` training images of each class moved to the
    other class folder: the same bytes and names, other labels (as the flip20 data set)."""
    shutil.copytree(source, target)
    benign, malignant = target / "train" / "Benign", target / "train" / "Malignant"
    moving = [(f, malignant) for f in sorted(benign.iterdir())[:per_class]] \
        + [(f, benign) for f in sorted(malignant.iterdir())[:per_class]]
    for file, folder in moving:
        file.rename(folder / file.name)
    return target


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "a", TINY)


def test_fingerprint_sees_labels_and_bytes_not_place_or_order(data, tmp_path):
    found = layout.discover(data)
    files, labels = list(found.train.files), list(found.train.labels)
    base = labelled_fingerprint(files, labels)
    assert base == labelled_fingerprint(files[::-1], labels[::-1])
    assert base == train_fingerprint(shutil.copytree(data, tmp_path / "copy"))
    flipped = flipped_copy(data, tmp_path / "flipped")
    assert sorted(p.name for p in flipped.rglob("*.jpg")) == sorted(p.name for p in data.rglob("*.jpg"))
    assert train_fingerprint(flipped) != base
    assert labelled_fingerprint(files, [1 - y for y in labels]) != base
    edited = shutil.copytree(data, tmp_path / "edited")
    first = sorted((edited / "train" / "Benign").iterdir())[0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert train_fingerprint(edited) != base


def _predictions(seeds=range(5), shift: float = 1.5, seed: int = 0) -> pd.DataFrame:
    """Saved predictions of variant "a" on 100 + 100 test images, one model per seed."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 100)
    frames = []
    for s in seeds:
        sep = shift + rng.normal(0, 0.1)
        p = 1 / (1 + np.exp(-(rng.normal(0, 1, 200) + sep * (2 * y - 1))))
        frames.append(pd.DataFrame({"variant": "a", "seed": s, "label": y, "prob_malignant": p,
                                    "file": [f"test/{i}.jpg" for i in range(200)]}))
    return pd.concat(frames, ignore_index=True)


def _run_folder(folder: Path, data_root: Path | None, predictions: pd.DataFrame) -> Path:
    """A run's predictions.csv and, when it trained on ``data_root``, the results.json
    fields a run writes about its training data."""
    folder.mkdir(parents=True)
    predictions.to_csv(folder / "predictions.csv", index=False)
    if data_root is not None:
        data = {"root": str(data_root), regression.TRAIN_FIELD: train_fingerprint(data_root)}
        (folder / "results.json").write_text(json.dumps({"provenance": {"data": data}}))
    return folder / "predictions.csv"


@pytest.fixture()
def baseline(data, tmp_path):
    """A config and a baseline made (through the CLI) from a run trained on ``data``."""
    cfg = tmp_path / "saved.toml"
    cfg.write_text(CONFIG)
    path = tmp_path / "saved.json"
    saved = _run_folder(tmp_path / "base_run", data, _predictions())
    assert main(["bench", "--config", str(cfg), "--baseline", str(path), "--predictions",
                 str(saved), "--update-baseline"]) == 0
    return {"config": cfg, "path": path, "tmp": tmp_path}


def _bench(baseline, predictions: Path, capsys) -> tuple[int, str]:
    code = main(["bench", "--config", str(baseline["config"]), "--baseline",
                 str(baseline["path"]), "--predictions", str(predictions)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_baseline_records_the_training_fingerprint(baseline, data):
    recorded = json.loads(baseline["path"].read_text())[regression.TRAIN_FIELD]
    assert recorded == train_fingerprint(data) and len(recorded) == 16


def test_equal_training_data_elsewhere_adds_no_note(baseline, data, capsys):
    copy = shutil.copytree(data, baseline["tmp"] / "copy")
    run = _run_folder(baseline["tmp"] / "run", copy, _predictions(range(10, 15), seed=1))
    code, out = _bench(baseline, run, capsys)
    assert code == 0 and "PASS" in out, out
    assert "NOTE" not in out and "training data" not in out and "training-data" not in out


def test_relabelled_training_data_are_said_once_and_still_judged(baseline, data, capsys):
    flipped = flipped_copy(data, baseline["tmp"] / "flipped")
    run = _run_folder(baseline["tmp"] / "run", flipped, _predictions(range(10, 15), seed=1))
    code, out = _bench(baseline, run, capsys)
    assert code == 0 and "PASS" in out, out
    notes = [line for line in out.splitlines() if line.startswith("NOTE")]
    assert len(notes) == 1 and DIFFERS in notes[0] and train_fingerprint(flipped) in notes[0]
    worse = _run_folder(baseline["tmp"] / "worse", flipped, _predictions(shift=0.5, seed=1))
    code, out = _bench(baseline, worse, capsys)
    assert code == 1 and "REGRESSED" in out and out.count(DIFFERS) == 1


def test_an_old_baseline_is_one_line_and_no_failure(baseline, data, capsys):
    old = json.loads(baseline["path"].read_text())
    del old[regression.TRAIN_FIELD]
    baseline["path"].write_text(json.dumps(old))
    run = _run_folder(baseline["tmp"] / "run", data, _predictions())
    code, out = _bench(baseline, run, capsys)
    assert code == 0 and "PASS" in out, out
    notes = [line for line in out.splitlines() if line.startswith("NOTE")]
    assert notes == ["NOTE: baseline has no training-data fingerprint (made before this check)"]


def test_a_run_without_results_json_says_it_is_not_compared(baseline, capsys):
    run = _run_folder(baseline["tmp"] / "run", None, _predictions())
    code, out = _bench(baseline, run, capsys)
    assert code == 0 and out.count("training-data fingerprint is unknown") == 1, out


def test_committed_baseline_has_the_bench_data_fingerprint():
    """What `melanoma-bench bench` computes (the bench config's generated data, found as
    run_benchmark finds it) equals what benchmarks/baselines/bench.json records."""
    cfg = config.load(config.resolve("bench"))
    found = limited(layout.discover(resolve_data_dir(cfg, None)), cfg.data.limit)
    baseline = regression.read_baseline(ROOT / "benchmarks" / "baselines" / "bench.json")
    assert baseline[regression.TRAIN_FIELD] == labelled_fingerprint(found.train.files,
                                                                    found.train.labels)




@pytest.mark.slow
def test_a_run_records_its_training_fingerprint(data, tiny_config, tmp_path):
    """results.json of a real (tiny) run holds the train/ fingerprint of its --data-dir."""
    cfg = tmp_path / "tinyfp.toml"
    cfg.write_text(tiny_config("tinyfp", [{"name": "tinyfp_native", "preprocessing": "native"}],
                               seed=3, synthetic=None))
    flipped = flipped_copy(data, tmp_path / "flipped")
    assert main(["run", "--config", str(cfg), "--data-dir", str(flipped), "--out",
                 str(tmp_path / "out"), "--models-dir", str(tmp_path / "models")]) == 0
    recorded = regression.run_train_fingerprint(tmp_path / "out" / "results.json")
    assert recorded == train_fingerprint(flipped) != train_fingerprint(data)


def test_model_cache_key_data_part_sees_a_relabelling_that_keeps_the_file_order(data, tmp_path):
    """The runner's data key (models/<variant>-<key>.keras) hashes names and bytes in order;
    the last benign image moved to Malignant/ keeps that order, so without the labels a run
    on the relabelled copy would load the models trained on the old labels."""
    from melanoma.data.splits import fingerprint

    def keys(root):
        found = layout.discover(root)
        files = found.train.files + found.test.files
        return fingerprint(files), fingerprint(files, [*found.train.labels, *found.test.labels])

    moved = shutil.copytree(data, tmp_path / "moved")
    last_benign = sorted((moved / "train" / "Benign").iterdir())[-1]
    last_benign.rename(moved / "train" / "Malignant" / last_benign.name)
    (names_before, key_before), (names_after, key_after) = keys(data), keys(moved)
    assert names_before == names_after  # the order-only hash cannot tell them apart
    assert key_before != key_after
