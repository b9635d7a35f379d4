"""End to end (slow: real training): a tiny `melanoma-bench run` with 3-fold cross-validation
and the k-fold mean row, 1 epoch at 32 px; its TensorBoard event files read back with
TensorBoard's own reader, the fold table, the mean row against the fold models evaluated
on their own, and a rerun that only loads."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from melanoma.cli.main import main

pytestmark = pytest.mark.slow
RUNS = ("train", "validation")


def read_scalars(folder) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(run, tag) -> [(step, value)] as TensorBoard's EventAccumulator reads them."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for run in RUNS:
        acc = EventAccumulator(str(folder / run), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            found[(run, tag)] = [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                                 for e in acc.Tensors(tag)]
    return found


@pytest.fixture(scope="module")
def cv_run(tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    (root / "c.toml").write_text(tiny_config(
        "tiny_cv", [{"name": "sw", "preprocessing": "samplewise"}], defaults={"bn_momentum": 0.5},
        synthetic={"n_train_per_class": 9, "n_test_per_class": 4, "image_size": 40, "seed": 3},
        data={"cv_folds": 3, "cv_average": True},
        evaluation={"bootstrap_resamples": 50, "audit": False}))
    mp = pytest.MonkeyPatch()
    mp.setenv("MELANOMA_DATA_CACHE", str(root / "cache"))
    args = ["run", "--config", str(root / "c.toml"), "--out", str(root / "out"),
            "--models-dir", str(root / "models")]
    assert main(args) == 0
    yield {"root": root, "out": root / "out", "models": root / "models", "args": args}
    mp.undo()


def test_every_job_has_its_scalars_in_tensorboard(cv_run):
    out = cv_run["out"]
    history = json.loads((out / "histories.json").read_text())["sw"]
    scalars = read_scalars(out / "tensorboard" / "sw" / "seed-7")
    for key, (run, tag) in {"loss": ("train", "epoch/loss"), "accuracy": ("train", "epoch/accuracy"),
                            "val_loss": ("validation", "epoch/loss"),
                            "val_accuracy": ("validation", "epoch/accuracy"),
                            "val_auc": ("validation", "epoch/auc")}.items():
        assert scalars[(run, tag)] == [(1, pytest.approx(history[key][0], abs=1e-6))], key
    folds = json.loads((out / "results.json").read_text())["cross_validation"]["folds"]
    for row in folds:
        fold = read_scalars(out / "tensorboard" / "sw" / "seed-7" / f"fold-{row['fold']}")
        assert [step for step, _ in fold[("train", "epoch/loss")]] == [1]
        # the exact validation AUC logged after the epoch is the fold table's AUC
        assert fold[("validation", "epoch/auc")][0][1] == pytest.approx(row["auc"], abs=1e-6)


def test_fold_models_are_cached_apart_from_the_split_model(cv_run):
    names = sorted(p.name.rsplit("-", 1)[0] for p in cv_run["models"].glob("*.keras"))
    assert names == ["sw", "sw-fold1of3", "sw-fold2of3", "sw-fold3of3"]
    assert not list(cv_run["models"].glob(".job-*.lock"))


def test_fold_table_covers_every_training_image_once(cv_run):
    out = cv_run["out"]
    cv = json.loads((out / "results.json").read_text())["cross_validation"]
    assert [(r["fold"], r["n_pos"] > 0, r["n"] - r["n_pos"] > 0) for r in cv["folds"]] == [
        (1, True, True), (2, True, True), (3, True, True)]
    assert sum(r["n"] for r in cv["folds"]) == 18
    oof = pd.read_csv(out / "cv_val_predictions.csv")
    assert oof["file"].is_unique and len(oof) == 18
    summary = cv["summary"][0]
    aucs = [r["auc"] for r in cv["folds"]]
    assert summary["auc_mean"] == pytest.approx(np.mean(aucs))
    assert summary["auc_sd"] == pytest.approx(np.std(aucs, ddof=1))
    assert "## Cross-validation" in (out / "results.md").read_text()


def test_mean_row_is_the_mean_of_the_fold_models_evaluated_alone(cv_run, tmp_path):
    from melanoma import api

    out = cv_run["out"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(dict.fromkeys(predictions.variant)) == ["sw", "sw (3-fold mean)"]
    mean_row = predictions[predictions.variant == "sw (3-fold mean)"].set_index("file")
    root = json.loads((out / "results.json").read_text())["provenance"]["data"]["root"]
    files = sorted(cv_run["models"].glob("sw-fold*.keras"))
    alone = pd.read_csv(api.evaluate_models(files, root, tmp_path / "alone").out_dir
                        / "predictions.csv")
    assert alone.variant.nunique() == 3
    mean = alone.groupby("file")["prob_malignant"].mean()
    assert np.allclose(mean.loc[mean_row.index], mean_row["prob_malignant"], atol=1e-6, rtol=0)
    val = pd.read_csv(out / "val_predictions.csv")
    assert len(val[val.variant == "sw (3-fold mean)"]) == 18  # out-of-fold: all of train/
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert np.isfinite(rows["sw (3-fold mean)"]["threshold"])


def test_rerun_loads_every_model_and_writes_the_same_outputs(cv_run, tmp_path, capsys):
    out2 = tmp_path / "again"
    args = [*cv_run["args"][:3], "--out", str(out2), "--models-dir", str(cv_run["models"])]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert ": training" not in err and err.count(": loading") == 4
    for name in ("predictions.csv", "val_predictions.csv", "cv_val_predictions.csv"):
        assert (out2 / name).read_bytes() == (cv_run["out"] / name).read_bytes(), name
    assert read_scalars(out2 / "tensorboard" / "sw" / "seed-7" / "fold-2") == read_scalars(
        cv_run["out"] / "tensorboard" / "sw" / "seed-7" / "fold-2")


def test_report_rebuilds_the_fold_table_without_a_model(cv_run, tmp_path):
    from melanoma import api

    api.rebuild_report(cv_run["out"], tmp_path / "rebuilt")
    saved = [json.loads((d / "results.json").read_text())["cross_validation"]
             for d in (cv_run["out"], tmp_path / "rebuilt")]
    assert saved[0] == saved[1]
    md = (tmp_path / "rebuilt" / "results.md").read_text()
    assert md.count("## Cross-validation") == 1 and "sw (3-fold mean)" in md
    page = (tmp_path / "rebuilt" / "index.html").read_text()
    assert page.count("<h2>Cross-validation</h2>") == 1
    for row in saved[0]["summary"]:  # every variant's mean ± SD row is on the page
        assert f"<td>{row['variant']}</td><td>{row['n_models']}</td>" in page
