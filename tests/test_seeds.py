"""Seeds as an axis: the config's `seeds`, one model key and job per (variant, seed), the
`seed` column of the predictions, and the report's mean / seed SD / combined interval,
"within training noise" and published-vs-reproduced tables (generated predictions, no TF)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma import api, config
from melanoma.evaluation import variance
from melanoma.evaluation.rows import EvalSettings
from melanoma.reporting import run_report as report
from melanoma.reporting.saved import PREDICTION_COLUMNS, read_predictions
from melanoma.runs import jobs
from melanoma.runs.benchmark import continuations
from melanoma.util.errors import UserError

RESAMPLES = 200
BASE = {"name": "s", "seed": 7, "defaults": {"image_size": 32},
        "variants": [{"name": "a", "epochs": 2}, {"name": "b", "epochs": 4},
                     {"name": "c", "preprocessing": "native"}]}


@pytest.mark.parametrize("value, message", [
    ("[]", "seeds must be a non-empty list"), ("[1, 1]", "must not repeat a seed"),
    ("[-1]", "integers >= 0"), ("[1.5]", "integers >= 0"), ("3", "non-empty list"),
    ("[true]", "integers >= 0"),
])
def test_bad_seeds_are_one_line_errors(value, message):
    with pytest.raises(UserError, match=message) as error:
        config.from_dict(dict(BASE), overrides=[f"seeds={value}"])
    assert len(str(error.value).splitlines()) == 1


def test_seeds_from_the_file_from_set_and_from_seed():
    assert config.from_dict(dict(BASE)).training_seeds == (7,)  # seed = n: one seed
    cfg = config.from_dict({**BASE, "seeds": [3, 1, 2]})
    assert cfg.training_seeds == (3, 1, 2) and cfg.seed == 7  # the split keeps `seed`
    assert config.from_dict(dict(BASE), overrides=["seeds=[1,2,3]"]).training_seeds == (1, 2, 3)
    one = api.load_config({**BASE, "seeds": [1, 2]}, seed=5)  # --seed N: one seed N
    assert (one.seed, one.training_seeds) == (5, (5,))


def test_a_training_seed_other_than_the_split_seed_gets_its_own_key():
    cfg = config.from_dict({**BASE, "seeds": [1, 7]})
    other = config.from_dict({**BASE, "seed": 1})  # split 1, trained with seed 1
    v = cfg.variants[0]
    # seed 1 on split 7 is not seed 1 on split 1 (another config whose `seed` is 1)
    assert jobs.job_key(v, "d", cfg, 1) != jobs.job_key(other.variants[0], "d", other, 1)
    assert jobs.job_recipe(v, "d", cfg, 1)["split_seed"] == 7
    assert len({jobs.job_key(x, "d", cfg, s) for x in cfg.variants for s in (1, 7)}) == 6


def test_jobs_are_seed_major_and_shards_partition_them(tmp_path):
    cfg = config.from_dict({**BASE, "seeds": [1, 2]})
    plan = jobs.plan_jobs(cfg, "d", tmp_path, retrain=False)
    assert [(j.variant.name, j.seed) for j in plan] == [
        ("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("c", 2)]
    assert plan[4].label == "[5/6] b seed 2" and plan[4].donor_key == plan[3].key
    assert [f.name for f in plan[3].hand_over] == [f"b-{plan[4].key}.partial"]
    shards = [jobs.shard_of(plan, (i, 4)) for i in range(1, 5)]
    assert sorted(j.index for s in shards for j in s) == list(range(6))
    assert [j.index for j in shards[1]] == [1, 5]
    assert continuations(cfg, "d", tmp_path, False, seed=2) == {"a": plan[3].hand_over}
    single = jobs.plan_jobs(config.from_dict(dict(BASE)), "d", tmp_path, retrain=False)
    assert [j.label for j in single] == ["[1/3] a", "[2/3] b", "[3/3] c"]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_bad_shard_is_a_user_error(text):
    with pytest.raises(UserError, match="--shard expects I/N"):
        jobs.parse_shard(text)


def predictions(n: int, seeds=(1, 2, 3), names=("a", "b", "c"), seed: int = 0,
                prefix: str = "test") -> pd.DataFrame:
    """Per (variant, seed) logistic scores; each seed moves the variant's separation."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    files = [f"{prefix}/{'Malignant' if v else 'Benign'}/{i}.jpg" for i, v in enumerate(y)]
    frames = []
    for k, name in enumerate(names):
        for s in seeds:
            score = y * (0.8 + 0.5 * k + rng.normal(0, 0.2)) + rng.normal(0, 1, len(y))
            p = np.round(1 / (1 + np.exp(-score + 0.4)), 9)
            frames.append(pd.DataFrame({"variant": name, "seed": s, "file": files, "label": y,
                                        "prob_malignant": p}))
    return pd.concat(frames, ignore_index=True)


def _write(out: Path, seeds, specs=None) -> list[dict]:
    test, val = predictions(120, seeds), predictions(80, seeds, seed=1, prefix="train")
    return report.write_run(out, test, specs or {n: {"spec": f"spec {n}"} for n in "abc"}, {},
                            {"config": {"name": "gen"}, "seed": 3}, val,
                            EvalSettings(seed=3, bootstrap_resamples=RESAMPLES),
                            set(test["file"].unique()[::2]), None)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds3")
    _write(out, (1, 2, 3), {"a": {"spec": "A", "published": {"auc": 0.99, "accuracy": 0.66}},
                            "b": {"spec": "B"}, "c": {"spec": "C"}})
    return out


def test_rows_are_means_over_seeds_with_seed_sd_and_combined_interval(three_seeds):
    saved = json.loads((three_seeds / "results.json").read_text())
    test = read_predictions(three_seeds / "predictions.csv")
    assert list(test.columns) == list(PREDICTION_COLUMNS)
    for row in saved["rows"]:
        aucs = [roc_auc_score(g.label, g.prob_malignant)
                for _, g in test[test.variant == row["variant"]].groupby("seed")]
        assert row["n_seeds"] == 3 and row["seeds"] == [1, 2, 3]
        assert row["auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert row["auc_sd"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
        assert row["training_variance"] == "measured over 3 seeds"
    per_seed = [r for r in saved["seed_rows"] if r["test_set"] == "full"]
    assert len(per_seed) == 9 and len(saved["seed_rows"]) == 18
    for r in per_seed:
        g = test[(test.variant == r["variant"]) & (test.seed == r["seed"])]
        assert r["auc"] == pytest.approx(roc_auc_score(g.label, g.prob_malignant), abs=1e-12)


def test_within_training_noise_follows_the_paired_comparison(three_seeds):
    rows = json.loads((three_seeds / "results.json").read_text())["rows"]
    test = read_predictions(three_seeds / "predictions.csv")
    comparisons = {c.a: c for c in variance.compare_to_best(test, "auc", RESAMPLES, seed=3)}
    best = max(rows, key=lambda r: r["auc"])["variant"]
    for row in rows:
        if row["variant"] == best:
            assert row["within_training_noise"] is None and row["delong_reference"] == best
            continue
        c = comparisons[row["variant"]]
        assert row["auc_diff_vs_best"] == pytest.approx(c.difference, abs=1e-12)
        assert (row["auc_diff_ci_low"], row["auc_diff_ci_high"]) == pytest.approx(
            (c.ci_low, c.ci_high))
        assert row["within_training_noise"] == (c.ci_low <= 0 <= c.ci_high)
    md = (three_seeds / "results.md").read_text()
    assert "within training noise" in md and "AUC seed SD" in md
    assert "AUC seed SD" in (three_seeds / "index.html").read_text()


def test_published_values_are_judged_against_the_reproduced_interval(three_seeds):
    saved = json.loads((three_seeds / "results.json").read_text())
    row = next(r for r in saved["rows"] if r["variant"] == "a")
    published = {p["metric"]: p for p in saved["published"]}
    assert set(published) == {"auc", "accuracy"}
    for metric, value in (("auc", 0.99), ("accuracy", 0.66)):
        p = published[metric]
        assert p["reproduced"] == row[metric] and p["published"] == value
        assert p["inside"] == (row[f"{metric}_ci_low"] <= value <= row[f"{metric}_ci_high"])
    assert published["auc"]["inside"] is False  # 0.99 is far above a ~0.75 model
    assert "## Published vs reproduced" in (three_seeds / "results.md").read_text()
    assert (three_seeds / "published.png").is_file()
    assert "published" not in row  # its own table, not a row column


def test_multi_seed_report_rebuilds_byte_for_byte(three_seeds, tmp_path):
    out = tmp_path / "rebuilt"
    report.rebuild(three_seeds, out)
    for name in ("results.json", "results.csv", "results.md", "index.html"):
        assert (out / name).read_bytes() == (three_seeds / name).read_bytes(), name


def test_one_seed_says_training_variance_was_not_measured(tmp_path):
    rows = _write(tmp_path, (5,))
    assert all(r["n_seeds"] == 1 and r["seeds"] == [5] and "auc_sd" not in r for r in rows)
    assert {r["training_variance"] for r in rows} == {variance.NOT_MEASURED}
    assert math.isfinite(rows[0]["auc_delong_p"]) or rows[0]["variant"] == rows[0][
        "delong_reference"]
    md = (tmp_path / "results.md").read_text()
    assert "| training variance" in md and "not measured: one seed" in md
    assert "DeLong p vs best" in md  # the single-seed columns stay


def test_predictions_without_a_seed_column_get_the_provenance_seed(tmp_path):
    run = tmp_path / "run"
    _write(run, (3,))
    before = json.loads((run / "results.json").read_text())["rows"]
    for name in ("predictions.csv", "val_predictions.csv"):  # as written before seeds
        frame = pd.read_csv(run / name)
        frame.drop(columns="seed").to_csv(run / name, index=False, float_format="%.9g")
    assert list(read_predictions(run / "predictions.csv").seed.unique()) == [3]
    assert list(read_predictions(run / "predictions.csv", seed=9).seed.unique()) == [9]
    rows = report.rebuild(run, tmp_path / "rebuilt")
    assert [r["auc"] for r in rows] == [r["auc"] for r in before]
    assert [r["auc_ci_low"] for r in rows] == [r["auc_ci_low"] for r in before]


def test_paper_config_carries_the_published_table():
    cfg = config.load("paper")
    published = {v.name: v.published for v in cfg.variants}
    assert published["efficient_net_b6_samplewise"] == {"accuracy": 0.9386, "auc": 0.9833}
    assert published["efficient_net_b6_random_featurewise"] == {"accuracy": 0.8335,
                                                                "auc": 0.9434}
    assert all(published.values())
    v = cfg.variants[0]  # `published` is not part of the model: same key without it
    assert v.model_key("d", 1, 0.15, "nearest") == dataclasses.replace(
        v, published=None).model_key("d", 1, 0.15, "nearest")
