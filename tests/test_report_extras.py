"""Ensembles and error galleries wired into the report: config validation, rows computed
from saved predictions, gallery files and the page's section; Grad-CAM from a saved model."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma import config
from melanoma.cli.main import main
from melanoma.evaluation import ensembles
from melanoma.evaluation.rows import EvalSettings
from melanoma.reporting import run_report as report
from melanoma.reporting.extras import ReportOptions
from melanoma.util.errors import UserError
from melanoma.util.keys import digest

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = [{"name": "a"}, {"name": "b"}, {"name": "c"}]


def _config(**more) -> dict:
    return {"name": "t", "variants": [dict(v) for v in VARIANTS], **more}


def test_ensembles_and_report_tables_are_validated_with_one_line():
    cfg = config.from_dict(_config(ensembles=[{"name": "ab", "members": ["a", "b"]},
                                              {"name": "abc", "members": ["ab", "c"],
                                               "method": "geometric"}],
                                   report={"gallery_cases": 0}))
    assert [(e.name, e.members, e.method) for e in cfg.ensembles] == [
        ("ab", ("a", "b"), "mean"), ("abc", ("ab", "c"), "geometric")]
    assert cfg.report.gallery_cases == 0 and cfg.report.gradcam
    assert config.from_dict(_config()).report.gallery_cases == 6
    bad = [({"ensembles": [{"name": "x", "members": ["a", "d"]}]}, "unknown member variant 'd'"),
           ({"ensembles": [{"name": "x", "members": ["a"]}]}, "at least two distinct"),
           ({"ensembles": [{"name": "x", "members": ["a", "a"]}]}, "at least two distinct"),
           ({"ensembles": [{"name": "x", "members": ["a", "b"], "method": "median"}]},
            "unknown ensemble method 'median'"),
           ({"ensembles": [{"name": "a", "members": ["b", "c"]}]}, "already a variant"),
           ({"ensembles": [{"name": "x", "members": ["a", "b"], "weights": [1]}]},
            "unknown key 'weights'"),
           ({"ensembles": [{"members": ["a", "b"]}]}, "has no name"),
           ({"ensembles": [{"name": "x/y", "members": ["a", "b"]}]}, "safe name"),
           ({"ensembles": {"name": "x"}}, "list of tables"),
           ({"report": {"gallery_cases": -1}}, "gallery_cases must be an integer >= 0"),
           ({"report": {"gallery_cases": True}}, "gallery_cases must be an integer >= 0"),
           ({"report": {"gradcam": "yes"}}, "gradcam must be true or false"),
           ({"report": {"galery_cases": 3}}, "did you mean 'gallery_cases'")]
    for more, message in bad:
        with pytest.raises(UserError, match=message) as caught:
            config.from_dict(_config(**more))
        assert "\n" not in str(caught.value)


def test_config_overrides_reach_the_report_table():
    cfg = config.from_dict(_config(), overrides=["report.gallery_cases=2"])
    assert cfg.report.gallery_cases == 2


@pytest.fixture
def saved_run(fake_predictions):
    """``saved_run(out, seeds=(3,), ensemble_cfg=None, root=None, **provenance)``: a run
    folder written from generated predictions; returns (test, val) predictions."""
    return functools.partial(_saved_run, fake_predictions)


def _saved_run(fake_predictions, out: Path, seeds=(3,), ensemble_cfg=None,
               root: Path | None = None, **prov):
    test = fake_predictions(120)
    val = fake_predictions(80, seed=1, prefix="train")
    test = pd.concat([test.assign(seed=s) for s in seeds], ignore_index=True)
    val = pd.concat([val.assign(seed=s) for s in seeds], ignore_index=True)
    provenance = {"config": {"name": "t", "variants": VARIANTS,
                             "ensembles": ensemble_cfg or []}, "seed": seeds[0], **prov}
    if root is not None:
        provenance["data"] = {"root": str(root)}
    report.write_run(out, test, {n: {"spec": n} for n in "abc"}, {}, provenance, val,
                     EvalSettings(seed=3, bootstrap_resamples=100))
    return test, val


def test_ensemble_rows_equal_rows_computed_by_hand(saved_run, tmp_path):
    test, _ = saved_run(tmp_path, ensemble_cfg=[{"name": "ab_geo", "members": ["a", "b"],
                                                   "method": "geometric"}])
    saved = json.loads((tmp_path / "results.json").read_text())
    row = next(r for r in saved["rows"] if r["variant"] == "ab_geo")
    a, b = (test[test["variant"] == v].set_index("file") for v in "ab")
    combined = np.sqrt(a["prob_malignant"] * b.loc[a.index, "prob_malignant"])
    assert row["auc"] == pytest.approx(roc_auc_score(a["label"], combined))
    assert row["auc_ci_low"] < row["auc"] < row["auc_ci_high"]
    assert np.isfinite(row["threshold"]) and "geometric mean" in row["spec"]
    assert "| ab_geo" in (tmp_path / "results.md").read_text()
    saved_test = (tmp_path / "predictions.csv").read_text()
    assert "ab_geo" not in saved_test  # computed from the saved rows on every build
    assert (tmp_path / "confusion_ab_geo.png").is_file()


def test_report_adds_an_ensemble_to_an_old_run_and_rebuilds_identically(saved_run, tmp_path, capsys):
    saved_run(tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "x"),
                 "--ensemble", "bc=b+c", "--gallery-cases", "0"]) == 0
    out = capsys.readouterr().out
    assert "| bc " in out
    rows = json.loads((tmp_path / "x" / "results.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["a", "b", "c", "bc"]
    assert main(["report", str(tmp_path / "run"), "--ensemble", "bc=b+zz"]) == 2
    assert "unknown member variant 'zz'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "run"), "--ensemble", "bc"]) == 2
    assert "NAME=VARIANT+VARIANT" in capsys.readouterr().err


def test_ensembles_over_seeds_combine_each_seed_on_its_own(saved_run, tmp_path):
    test, _ = saved_run(tmp_path, seeds=(1, 2), ensemble_cfg=[{"name": "ab",
                                                                "members": ["a", "b"]}])
    test = test.copy()
    test.loc[test["seed"] == 2, "prob_malignant"] **= 2  # make the seeds differ
    extra = ensembles.with_ensembles(test, [{"name": "ab", "members": ["a", "b"]}])
    for seed in (1, 2):
        mine = extra[(extra["variant"] == "ab") & (extra["seed"] == seed)].set_index("file")
        a, b = (test[(test["variant"] == v) & (test["seed"] == seed)].set_index("file")
                for v in "ab")
        expected = (a["prob_malignant"] + b["prob_malignant"]) / 2  # aligned on file
        np.testing.assert_allclose(mine["prob_malignant"], expected.loc[mine.index])
    row = next(r for r in json.loads((tmp_path / "results.json").read_text())["rows"]
               if r["variant"] == "ab")
    assert row["n_seeds"] == 2
    only_a = ensembles.with_ensembles(test[test["variant"] != "b"],
                                      [{"name": "ab", "members": ["a", "b"]}])
    assert "ab" not in set(only_a["variant"])  # `run --variant a` left b out: skipped


def test_galleries_from_saved_predictions_without_models(saved_run, fake_predictions, write_images, tmp_path):
    root = tmp_path / "data"
    write_images(root, fake_predictions(120)["file"])
    saved_run(tmp_path / "run", root=root)
    code = ("import sys; from melanoma.cli.main import main; "
            f"assert main(['report', {str(tmp_path / 'run')!r}, '--gallery-cases', '3']) == 0; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)
    page = (tmp_path / "run" / "index.html").read_text()
    section = page.split("<h2>Error galleries</h2>")[1].split("<h2>")[0]
    for v in "abc":
        assert (tmp_path / "run" / f"gallery_{v}.png").is_file()
    assert "No heat maps (no models folder): a, b, c." in section
    assert section.count('<figure class="thumb"') == 3 * 3 * 3  # 3 kinds x 3 cases x 3 variants
    assert "Grad-CAM:" not in section and "Malignant, p=" in section
    assert main(["report", str(tmp_path / "run"), "--gallery-cases", "0"]) == 0
    assert "Error galleries" not in (tmp_path / "run" / "index.html").read_text()


def test_galleries_say_where_the_images_were_not_found(saved_run, tmp_path):
    saved_run(tmp_path / "run", root=tmp_path / "gone")
    page = (tmp_path / "run" / "index.html").read_text()
    assert "No galleries: the images are not at" in page and "--data-dir" in page


def test_gradcam_overlays_from_a_saved_model(saved_run, fake_predictions, write_images, tmp_path,
                                              gradcam_model):
    """A tiny saved model under the key the run recorded: its variant's gallery gets Grad-CAM
    overlays, the others say they have no model."""
    pytest.importorskip("keras")
    from melanoma.models import storage

    root = tmp_path / "data"
    write_images(root, fake_predictions(120)["file"])
    model = gradcam_model()
    (tmp_path / "models").mkdir()
    recipe = {"variant": "a"}  # a model key is the hash of the recipe its sidecar holds
    key = digest(recipe)
    storage.save(model, tmp_path / "models", "a", key, {"recipe": recipe,
                 "preprocessing": "samplewise", "image_size": 32, "interpolation": "nearest"})
    saved_run(tmp_path / "run", root=root, model_keys={"a": key, "b": "k999"})
    report.rebuild(tmp_path / "run", options=ReportOptions(models_dir=tmp_path / "models",
                                                           gallery_cases=2))
    section = (tmp_path / "run" / "index.html").read_text().split("<h2>Error galleries")[1]
    a_part = section.split("<section")[1]
    assert a_part.count('alt="Grad-CAM: ') == a_part.count('<figure class="thumb"') == 6
    assert "from the saved models of: a." in section
    # missed melanomas show the evidence for benign (the class they were given), the rest
    # for malignant: the same maps as case_heatmaps of that class on the same model
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.explain import gradcam

    files = sorted(fake_predictions(120)["file"].unique())[:4]
    maps = gradcam.saved_model_heatmaps(tmp_path / "models", key, files, root, files[:2])
    loaded = storage.load(storage.find(tmp_path / "models", key))
    for class_index, part in ((0, files[:2]), (1, files[2:])):
        direct = gradcam.case_heatmaps(loaded, get_preprocessing("samplewise"), part, root,
                                       "nearest", class_index)
        for f in part:
            np.testing.assert_allclose(maps[f], direct[f], atol=1e-6)  # two loads, one model
    malignant_map = gradcam.case_heatmaps(loaded, get_preprocessing("samplewise"), files[:1], root,
                                       "nearest", 1)[files[0]]
    assert not np.allclose(maps[files[0]], malignant_map)  # the class choice made a difference
    assert "No heat maps (no saved model with key k999" in section
    assert "No heat maps (no saved model recorded for it: ensembles and TTA rows have none): " \
        "c." in section


def test_the_default_config_ships_one_ensemble_of_its_own_variants():
    cfg = config.load("default")
    names = {v.name for v in cfg.variants}
    assert [e.method for e in cfg.ensembles] == ["mean"]
    assert set(cfg.ensembles[0].members) <= names and cfg.ensembles[0].name not in names
    picked = config.select_variants(cfg, ["efficient_net_b0_native"])
    assert picked.ensembles == cfg.ensembles  # skipped at report time (members absent)


def test_a_map_too_coarse_to_localise_is_not_drawn_and_the_page_says_why(
        tmp_path, saved_run, write_images, fake_predictions):
    """B0 at 64 px: its last block is 2 x 2, so no overlay, one sentence instead (decided
    from the sidecar, before TensorFlow or the model is loaded)."""
    from melanoma.explain import gradcam

    assert gradcam.too_coarse(2, 2, 64).startswith("the last convolutional block's map is 2 x 2")
    assert gradcam.too_coarse(16, 16, 512) == "" and gradcam.too_coarse(8, 8, 256) == ""
    root = tmp_path / "data"
    write_images(root, fake_predictions(120)["file"])
    models = tmp_path / "models"
    models.mkdir()
    recipe = {"variant": {"backbone": "B0", "image_size": 64}}
    key = digest(recipe)
    (models / f"a-{key}.keras").write_bytes(b"never loaded")
    (models / f"a-{key}.json").write_text(json.dumps(
        {"config_key": key, "recipe": recipe, "variant": {"backbone": "B0"}, "image_size": 64,
         "preprocessing": "samplewise"}))
    saved_run(tmp_path / "run", root=root, model_keys={"a": key})
    report.rebuild(tmp_path / "run", options=ReportOptions(models_dir=models))
    page = (tmp_path / "run" / "index.html").read_text()
    assert 'alt="Grad-CAM: ' not in page
    assert "map is 2 x 2 at 64 px, too coarse to localise" in page
