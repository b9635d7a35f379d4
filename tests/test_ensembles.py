"""melanoma.evaluation.ensembles: rows computed by hand on random inputs, and every refusal."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from melanoma.evaluation.ensembles import add_ensembles, ensemble_predictions
from melanoma.util.errors import UserError


def random_predictions(seed: int, n_files: int = 37, variants=("a", "b", "c")) -> pd.DataFrame:
    """Each variant predicts the same files with the same labels, in its own random order."""
    rng = np.random.default_rng(seed)
    files = [f"test/{'Malignant' if i % 3 == 0 else 'Benign'}/img_{i:03d}.jpg"
             for i in range(n_files)]
    labels = [int(i % 3 == 0) for i in range(n_files)]
    blocks = []
    for variant in variants:
        order = rng.permutation(n_files)
        blocks.append(pd.DataFrame({"variant": variant, "file": [files[i] for i in order],
                                    "label": [labels[i] for i in order],
                                    "prob_malignant": rng.random(n_files)}))
    return pd.concat(blocks, ignore_index=True)


def by_hand(predictions, members, method):
    """file -> combined probability with plain Python loops and math."""
    per_file = {}
    for row in predictions.itertuples():
        if row.variant in members:
            per_file.setdefault(row.file, []).append(row.prob_malignant)
    if method == "mean":
        return {f: sum(v) / len(v) for f, v in per_file.items()}
    return {f: math.prod(v) ** (1 / len(v)) for f, v in per_file.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["mean", "geometric"])
@pytest.mark.parametrize("members", [("a", "b"), ("c", "a", "b")])
def test_matches_a_hand_computation(seed, method, members):
    predictions = random_predictions(seed)
    rows = ensemble_predictions(predictions, members, method, name="ens")
    expected = by_hand(predictions, members, method)
    assert list(rows.columns) == ["variant", "file", "label", "prob_malignant"]
    assert set(rows["variant"]) == {"ens"} and len(rows) == len(expected)
    first = predictions[predictions["variant"] == members[0]]
    assert list(rows["file"]) == list(first["file"])  # the first member's order
    assert list(rows["label"]) == list(first["label"])
    for row in rows.itertuples():
        assert row.prob_malignant == pytest.approx(expected[row.file], rel=1e-12, abs=0)


def test_geometric_is_below_arithmetic_and_zero_wins():
    predictions = random_predictions(3)
    predictions.loc[(predictions["variant"] == "b") & (predictions.index % 5 == 0),
                    "prob_malignant"] = 0.0
    mean = ensemble_predictions(predictions, ["a", "b"], "mean", name="m")
    geo = ensemble_predictions(predictions, ["a", "b"], "geometric", name="g")
    assert np.all(geo["prob_malignant"].to_numpy() <= mean["prob_malignant"].to_numpy() + 1e-15)
    zero_files = set(predictions.loc[(predictions["variant"] == "b")
                                     & (predictions["prob_malignant"] == 0), "file"])
    assert zero_files and set(geo.loc[geo["prob_malignant"] == 0, "file"]) == zero_files


def test_add_ensembles_appends_rows_scored_like_any_variant():
    from melanoma.evaluation.rows import EvalSettings, evaluate

    predictions = random_predictions(4)
    combined = add_ensembles(predictions, [{"name": "ens", "members": ["a", "b", "c"]},
                                           {"name": "ens_geo", "members": ["a", "ens"],
                                            "method": "geometric"}])
    assert list(dict.fromkeys(combined["variant"])) == ["a", "b", "c", "ens", "ens_geo"]
    rows = evaluate(combined, None, EvalSettings(bootstrap_resamples=50))
    assert [r["variant"] for r in rows] == ["a", "b", "c", "ens", "ens_geo"]
    from sklearn.metrics import roc_auc_score
    ens = combined[combined["variant"] == "ens"]
    assert rows[3]["auc"] == pytest.approx(roc_auc_score(ens["label"], ens["prob_malignant"]))


@pytest.mark.parametrize("change, message", [
    (lambda p: p, "at least two distinct"),
    (lambda p: p[~((p["variant"] == "b") & (p["file"] == "test/Benign/img_001.jpg"))],
     "different test files"),
    (lambda p: p.assign(label=np.where((p["variant"] == "b") & (p["file"].str.endswith("_004.jpg")),
                                       1 - p["label"], p["label"])), "disagree on the label"),
    (lambda p: pd.concat([p, p[p["variant"] == "a"].head(1)]), "several predictions"),
    (lambda p: p.assign(prob_malignant=p["prob_malignant"] * 2), "must lie in [0, 1]"),
])
def test_refuses_inconsistent_members(change, message):
    members = ["a", "a"] if message.startswith("at least") else ["a", "b"]
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ensemble_predictions(change(random_predictions(5)), members, name="ens")


def test_refuses_unknown_names_and_methods():
    predictions = random_predictions(6)
    with pytest.raises(UserError, match="unknown member variant 'bb'.*did you mean 'b'"):
        ensemble_predictions(predictions, ["a", "bb"])
    with pytest.raises(UserError, match="unknown ensemble method 'median'"):
        ensemble_predictions(predictions, ["a", "b"], "median")
    with pytest.raises(UserError, match="already a variant"):
        ensemble_predictions(predictions, ["a", "b"], name="c")
    with pytest.raises(UserError, match="missing \\['members'\\]"):
        add_ensembles(predictions, [{"name": "x"}])
    with pytest.raises(UserError, match="unknown \\['weights'\\]"):
        add_ensembles(predictions, [{"name": "x", "members": ["a", "b"], "weights": [1, 2]}])


def test_default_name_and_no_tensorflow_import():
    rows = ensemble_predictions(random_predictions(7), ["a", "c"], "geometric")
    assert set(rows["variant"]) == {"ensemble_geometric(a+c)"}
    code = ("import sys, melanoma.evaluation.ensembles; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
