"""k-fold cross-validation, fast parts: the folds (stratified, grouped, seeded), the config
keys and their errors, the fold jobs' cache keys and file names, and the report's table
checked against an independent computation on random predictions (no TensorFlow)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma import config
from melanoma.config import run_keys
from melanoma.data import kfold
from melanoma.models import storage
from melanoma.reporting import folds as cv_table
from melanoma.runs import jobs
from melanoma.runs.cv import FoldPlan, mean_name
from melanoma.util.errors import UserError

BASE = {"name": "cv", "seed": 7, "defaults": {"image_size": 32},
        "variants": [{"name": "a", "epochs": 2}, {"name": "b", "epochs": 4},
                     {"name": "c", "preprocessing": "native"}]}


def labels_of(n_benign: int, n_malignant: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation([0] * n_benign + [1] * n_malignant)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_stratified_cover_every_row_once_and_depend_only_on_the_seed(k):
    y = labels_of(83, 21)
    numbers = kfold.fold_numbers(y, None, k, seed=3)
    assert sorted(set(numbers.tolist())) == list(range(1, k + 1))
    for label in (0, 1):
        counts = np.bincount(numbers[y == label], minlength=k + 1)[1:]
        assert counts.max() - counts.min() <= 1  # stratified: each class spread evenly
    assert np.array_equal(numbers, kfold.fold_numbers(y, None, k, seed=3))
    assert not np.array_equal(numbers, kfold.fold_numbers(y, None, k, seed=4))
    assert np.array_equal(numbers, kfold.fold_numbers(y, np.full(len(y), ""), k, seed=3))


def test_grouped_folds_never_split_a_lesion():
    rng = np.random.default_rng(1)
    lesion = rng.integers(0, 40, size=150)
    y = (lesion % 4 == 0).astype(int)  # a lesion has one label
    ids = np.array([f"L{i}" for i in lesion], dtype=object)
    ids[:10] = ""  # images without a lesion id are groups of their own
    numbers = kfold.fold_numbers(y, ids, 4, seed=0)
    for group in set(ids[10:].tolist()):
        assert len(set(numbers[ids == group].tolist())) == 1, group
    assert len(set(numbers[:10].tolist())) > 1  # the id-less images are not one group
    for fold in range(1, 5):
        assert set(y[numbers == fold].tolist()) == {0, 1}
    assert np.array_equal(numbers, kfold.fold_numbers(y, ids, 4, seed=0))


def test_fold_rows_map_layout_files_to_cache_rows():
    numbers = np.array([1, 2, 3, 1, 2, 3, 1])
    kept = np.array([0, 2, 3, 4, 6])  # files 1 and 5 were unreadable
    train, val = kfold.fold_rows(numbers, kept, 1)
    assert val.tolist() == [0, 2, 4] and train.tolist() == [1, 3]


@pytest.mark.parametrize("labels, ids, k, message", [
    (labels_of(30, 4), None, 5, r"cv_folds = 5 needs at least 5 Malignant images in train/, "
                                r"found 4: use cv_folds <= 4"),
    (labels_of(30, 1), None, 2, r"found 1: use more data"),
    (np.array([0, 0, 0, 1, 1, 1]), np.array(["a", "a", "b", "c", "c", "c"], dtype=object), 3,
     r"3 Benign lesions/patients in train/, found 2: use cv_folds <= 2"),
])
def test_too_many_folds_is_one_line(labels, ids, k, message):
    with pytest.raises(UserError, match=message) as error:
        kfold.fold_numbers(labels, ids, k, seed=0)
    assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("value, message", [
    ("0", "cv_folds must be a whole number >= 2"), ("-3", "cv_folds must be a whole number"),
    ('"five"', "cv_folds must be int"), ("2.5", "cv_folds must be int"),
])
def test_bad_cv_folds_values(value, message):
    with pytest.raises(UserError, match=message) as error:
        config.from_dict(dict(BASE), overrides=[f"data.cv_folds={value}"])
    assert len(str(error.value).splitlines()) == 1


def test_cv_keys_default_off_and_parse():
    cfg = config.from_dict(dict(BASE))
    assert cfg.data.cv_folds is None and cfg.data.cv_average is False
    assert cfg.tensorboard is True and cfg.mlflow is False
    cfg = config.from_dict(dict(BASE), overrides=["data.cv_folds=5", "data.cv_average=true"])
    assert (cfg.data.cv_folds, cfg.data.cv_average) == (5, True)
    assert not kfold.enabled(1) and not kfold.enabled(None) and kfold.enabled(2)


def test_mlflow_on_without_the_package_is_one_line(monkeypatch):
    monkeypatch.setattr(run_keys, "installed", lambda name: False)
    with pytest.raises(UserError, match="config: mlflow needs the mlflow package") as error:
        config.from_dict(dict(BASE), overrides=["mlflow=true"])
    assert len(str(error.value).splitlines()) == 1
    monkeypatch.setattr(run_keys, "installed", lambda name: True)
    assert config.from_dict(dict(BASE), overrides=["mlflow=true"]).mlflow is True


def test_cv_average_without_folds_is_an_error():
    from melanoma.runs.cv import fold_plan

    cfg = config.from_dict(dict(BASE), overrides=["data.cv_average=true"])
    with pytest.raises(UserError, match="cv_average = true needs data.cv_folds >= 2"):
        fold_plan(cfg, None)


def _plan(k: int, seed: int = 0) -> FoldPlan:
    numbers = kfold.fold_numbers(labels_of(20, 10), None, k, seed)
    return FoldPlan(k, numbers, kfold.fingerprint(numbers), False)


def test_fold_jobs_have_their_own_keys_and_files_and_leave_the_split_jobs_unchanged(tmp_path):
    cfg = config.from_dict({**BASE, "seeds": [1, 2]})
    single = jobs.plan_jobs(cfg, "d", tmp_path, retrain=False)
    plan = _plan(3)
    with_folds = jobs.plan_jobs(cfg, "d", tmp_path, retrain=False, folds=plan)
    assert len(with_folds) == 3 * 2 * (1 + 3)
    split_jobs = [j for j in with_folds if not j.fold]
    assert [(j.variant, j.seed, j.key, j.donor_key) for j in split_jobs] == [
        (j.variant, j.seed, j.key, j.donor_key) for j in single]
    assert [j.index for j in with_folds] == list(range(len(with_folds)))
    keys = [j.key for j in with_folds]
    assert len(set(keys)) == len(keys)  # no fold model collides with another or the split's
    files = {storage.model_path(tmp_path, j.variant.name, j.key).name for j in with_folds}
    assert len(files) == len(with_folds)
    fold_job = next(j for j in with_folds if j.fold == 2 and j.parent == "b" and j.seed == 1)
    assert fold_job.variant.name == "b-fold2of3" and fold_job.label.endswith("seed 1 fold 2/3")
    # b continues a's training on the same fold (same seed and data), never across folds
    donor = next(j for j in with_folds if j.fold == 2 and j.parent == "a" and j.seed == 1)
    assert fold_job.donor_key == donor.key
    assert [p.name for p in donor.hand_over] == [f"b-fold2of3-{fold_job.key}.partial"]
    # the order of the jobs: seed by seed, each seed's split jobs before its folds
    assert [(j.seed, j.fold) for j in with_folds[:12:3]] == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_fold_keys_change_with_k_and_the_fold_assignment():
    cfg = config.from_dict(dict(BASE))
    v = cfg.variants[0]
    three, other_seed, four = _plan(3), _plan(3, seed=1), _plan(4)
    key = jobs.job_key(v, "d", cfg, 7, three, 1)
    assert key == jobs.job_key(v, "d", cfg, 7, _plan(3), 1)  # deterministic
    assert key != jobs.job_key(v, "d", cfg, 7, other_seed, 1)
    assert key != jobs.job_key(v, "d", cfg, 7, four, 1)
    assert key != jobs.job_key(v, "d", cfg, 7, three, 2)
    assert jobs.job_key(v, "d", cfg, 7, three, 0) == jobs.job_key(v, "d", cfg, 7)


def random_fold_predictions(seed: int = 0, k: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for variant, quality in (("good", 2.0), ("weak", 0.3)):
        for training_seed in (1, 2):
            y = labels_of(40, 20, seed=training_seed)
            numbers = kfold.fold_numbers(y, None, k, training_seed)
            p = 1 / (1 + np.exp(-(quality * (2 * y - 1) + rng.normal(size=len(y)))))
            frames.append(pd.DataFrame({"variant": variant, "seed": training_seed,
                                        "fold": numbers, "file": [f"f{i}" for i in range(60)],
                                        "label": y, "prob_malignant": p}))
    return pd.concat(frames, ignore_index=True).sort_values(["variant", "seed", "fold"],
                                                            kind="stable")


def test_fold_table_equals_an_independent_computation():
    frame = random_fold_predictions()
    rows = cv_table.fold_rows(frame)
    assert len(rows) == 2 * 2 * 4
    for row in rows:
        g = frame[(frame.variant == row["variant"]) & (frame.seed == row["seed"])
                  & (frame.fold == row["fold"])]
        y, p = g.label.to_numpy(), g.prob_malignant.to_numpy()
        assert row["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert row["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y), abs=1e-12)
        assert row["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= 0.5), abs=1e-12)
        assert row["specificity"] == pytest.approx(np.mean(p[y == 0] < 0.5), abs=1e-12)
        assert row["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    summary = {r["variant"]: r for r in cv_table.summary_rows(frame, rows)}
    for variant in ("good", "weak"):
        aucs = [r["auc"] for r in rows if r["variant"] == variant]
        assert summary[variant]["auc_mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert summary[variant]["auc_sd"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
        pooled = [roc_auc_score(g.label, g.prob_malignant)
                  for _, g in frame[frame.variant == variant].groupby("seed")]
        assert summary[variant]["oof_auc"] == pytest.approx(np.mean(pooled), abs=1e-12)
        assert summary[variant]["n_models"] == 8 and summary[variant]["k"] == 4
    assert summary["good"]["auc_mean"] > summary["weak"]["auc_mean"]


def test_add_to_report_writes_json_and_markdown_once(tmp_path):
    frame = random_fold_predictions(1, k=3)
    frame.to_csv(tmp_path / cv_table.FILE, index=False)
    (tmp_path / "results.json").write_text(json.dumps({"rows": []}))
    (tmp_path / "results.md").write_text("# Results\n\ntable\n")
    first = cv_table.add_to_report(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert cv_table.add_to_report(tmp_path) == first  # a rebuild replaces, not appends
    assert (tmp_path / "results.md").read_text() == md and md.count("## Cross-validation") == 1
    assert md.startswith("# Results\n\ntable\n")
    saved = json.loads((tmp_path / "results.json").read_text())["cross_validation"]
    assert [r["variant"] for r in saved["summary"]] == ["good", "weak"]
    assert len(saved["folds"]) == 2 * 2 * 3
    good = saved["summary"][0]
    assert f"{good['auc_mean']:.3f} ± {good['auc_sd']:.3f}" in md and good["n_models"] == 6
    assert cv_table.add_to_report(tmp_path / "nothing") is None


def test_damaged_fold_predictions_are_one_line(tmp_path):
    frame = random_fold_predictions(2, k=2)
    frame.loc[frame.index[3], "prob_malignant"] = 1.5
    frame.to_csv(tmp_path / cv_table.FILE, index=False)
    with pytest.raises(UserError, match="cv_val_predictions.csv"):
        cv_table.read(tmp_path / cv_table.FILE)
    frame.drop(columns="fold").to_csv(tmp_path / cv_table.FILE, index=False)
    with pytest.raises(UserError, match="missing column"):
        cv_table.read(tmp_path / cv_table.FILE)


def test_mean_row_name():
    assert mean_name("b0_samplewise", 5) == "b0_samplewise (5-fold mean)"


def test_fold_plan_groups_by_the_manifests_lesion_ids(tmp_path):
    """manifest.csv (as `melanoma-bench import` writes it) -> StratifiedGroupKFold."""
    from melanoma.data import layout
    from melanoma.runs.cv import fold_plan, train_group_ids

    files, labels, lines = [], [], ["file,group_id"]
    for i in range(24):
        label = int(i % 3 == 0)
        path = tmp_path / "train" / ("Malignant" if label else "Benign") / f"img{i}.jpg"
        files.append(path)
        labels.append(label)
        lines.append(f"{path.relative_to(tmp_path).as_posix()},{'' if i == 5 else f'L{i // 2}'}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    found = layout.DataLayout(tmp_path, layout.Split(tuple(files), tuple(labels)),
                              layout.Split((), ()))
    ids = train_group_ids(found)
    assert ids[0] == "L0" and ids[1] == "L0" and ids[5] == "" and ids[23] == "L11"
    cfg = config.from_dict(dict(BASE), overrides=["data.cv_folds=3"])
    plan = fold_plan(cfg, found)
    assert plan.grouped and plan.k == 3
    for lesion in set(ids.tolist()) - {""}:
        assert len(set(plan.numbers[ids == lesion].tolist())) == 1
    assert np.array_equal(plan.numbers, fold_plan(cfg, found).numbers)
    (tmp_path / "manifest.csv").unlink()
    assert not fold_plan(cfg, found).grouped


def test_run_with_too_many_folds_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys,
                                                                           monkeypatch):
    from melanoma.cli.main import main

    monkeypatch.setenv("MELANOMA_DATA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c.toml").write_text(
        'name = "few"\n[data]\ncv_folds = 12\n[data.synthetic]\nn_train_per_class = 10\n'
        'n_test_per_class = 2\nimage_size = 40\n[[variants]]\nname = "v"\n')
    code = main(["run", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out"),
                 "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("melanoma-bench: error: data.cv_folds = 12 needs at least 12 Benign "
                       "images in train/, found 10: use cv_folds <= 10")
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()


def test_fold_rows_and_k_fold_means_include_tta_when_it_is_on(tmp_path):
    """With evaluation.tta the cross-validation gets the same "+tta" rows as the single
    split: per-fold validation frames and a "(k-fold mean)" row of the flip-averaged
    probabilities (a fake runner with random probabilities; no TensorFlow)."""
    from types import SimpleNamespace

    from melanoma.models.predict import TTA_SUFFIX
    from melanoma.runs.collect import Collected
    from melanoma.runs.cv import add_fold_results

    cfg = config.from_dict({**BASE, "variants": [{"name": "a"}]},
                           overrides=["data.cv_folds=3", "data.cv_average=true",
                                      "evaluation.tta=true"])
    plan = _plan(3)
    fold_jobs = [j for j in jobs.plan_jobs(cfg, "d", tmp_path, False, folds=plan) if j.fold]
    rng = np.random.default_rng(5)
    test = SimpleNamespace(files=[tmp_path / f"t{i}.jpg" for i in range(6)],
                           labels=np.array([0, 1] * 3))
    vals = {j.fold: SimpleNamespace(files=[tmp_path / f"v{j.fold}_{i}.jpg" for i in range(4)],
                                    labels=np.array([0, 1, 0, 1])) for j in fold_jobs}
    probs = {j.fold: {split + suffix: rng.random(6 if split == "test" else 4)
                      for split in ("test", "val") for suffix in ("", TTA_SUFFIX)}
             for j in fold_jobs}
    runner = SimpleNamespace(
        folds=plan, jobs=fold_jobs, splits_for=lambda variant: SimpleNamespace(test=test),
        result=lambda job: (probs[job.fold], {"loss": [1.0]}, None),
        job_splits=lambda job: SimpleNamespace(val=vals[job.fold]))
    collected = Collected(specs={"a": {"spec": "s"}, "a" + TTA_SUFFIX: {"spec": "s | TTA"}})
    add_fold_results(collected, cfg, runner, SimpleNamespace(root=tmp_path))

    folds = pd.concat(collected.fold_frames)
    assert sorted(folds.groupby("variant")["fold"].nunique().items()) == [("a", 3),
                                                                           ("a+tta", 3)]
    tta_fold2 = folds[(folds["variant"] == "a+tta") & (folds["fold"] == 2)]
    np.testing.assert_array_equal(tta_fold2["prob_malignant"], probs[2]["val+tta"])
    means = {f["variant"].iloc[0]: f for f in collected.frames}
    assert set(means) == {mean_name("a", 3), mean_name("a+tta", 3)}
    expected = (probs[1]["test+tta"] + probs[2]["test+tta"] + probs[3]["test+tta"]) / 3
    np.testing.assert_allclose(means[mean_name("a+tta", 3)]["prob_malignant"], expected)
    assert "TTA" in collected.specs[mean_name("a+tta", 3)]["spec"]
    assert "mean probability of the 3 fold models" in collected.specs[mean_name("a+tta", 3)][
        "note"]
    assert len(collected.tracks) == 3  # one history per fold model, not one per row
