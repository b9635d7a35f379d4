"""--set KEY=VALUE, --seed and --limit: parsed as TOML values, validated like the file,
recorded in the config (and so in the provenance and the model keys)."""
from __future__ import annotations

import re

import pytest

from melanoma import api, config
from melanoma.cli.main import main
from melanoma.config.overrides import parse_value
from melanoma.data import layout
from melanoma.data.splits import limited
from melanoma.util.errors import UserError


@pytest.mark.parametrize("text, value", [("2", 2), ("1e-4", 1e-4), ("true", True),
                                         ("[1, 2, 3]", [1, 2, 3]), ('"x y"', "x y"),
                                         ("/data/isic", "/data/isic"), ("B0", "B0")])
def test_values_are_toml_or_plain_text(text, value):
    assert parse_value(text) == value


def test_overrides_reach_defaults_rows_and_tables():
    cfg = config.load("default", ["defaults.epochs=1", "evaluation.tta=true", "seed=7",
                                  "variants.efficient_net_b0_native.learning_rate=3e-4",
                                  "data.limit=20"])
    assert {v.epochs for v in cfg.variants if v.name != "efficient_net_b0_samplewise_long"} == {1}
    assert cfg.evaluation.tta is True and cfg.seed == 7 and cfg.data.limit == 20
    native = next(v for v in cfg.variants if v.name == "efficient_net_b0_native")
    assert native.learning_rate == 3e-4
    assert cfg.overrides == ("defaults.epochs=1", "evaluation.tta=true", "seed=7",
                             "variants.efficient_net_b0_native.learning_rate=3e-4",
                             "data.limit=20")
    assert cfg.to_dict()["overrides"] == list(cfg.overrides) or \
        tuple(cfg.to_dict()["overrides"]) == cfg.overrides


def test_an_override_changes_the_model_key():
    plain = config.load("default").variants[0]
    changed = config.load("default", ["defaults.learning_rate=5e-4"]).variants[0]
    assert plain.model_key("d", 1, 0.15, "nearest") != changed.model_key("d", 1, 0.15, "nearest")


@pytest.mark.parametrize("items, message", [
    (["epochs"], "--set expects KEY=VALUE"),
    (["defaults.epoch=2"], "unknown key 'epoch' (did you mean 'epochs'?)"),
    (["defaults.epochs=0"], "epochs must be a positive integer"),
    (["variants.nope.epochs=2"], "no row 'nope'"),
    (["seed=-3"], "seed must be an integer >= 0"),
    (["defaults.learning_rate=inf"], "learning_rate must be a finite number above 0"),
])
def test_bad_overrides_are_one_line_errors(items, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        config.load("default", items)
    assert "\n" not in str(error.value)


def test_cli_bad_override_exits_2(capsys):
    assert main(["run", "--set", "defaults.epochs=zero"]) == 2
    assert "epochs must be int" in capsys.readouterr().err


def test_api_seed_and_limit_become_overrides():
    cfg = api.load_config("default", ["defaults.epochs=1"], seed=3, limit=10)
    assert cfg.overrides == ("defaults.epochs=1", "seed=3", "data.limit=10")
    assert cfg.seed == 3 and cfg.data.limit == 10


def test_unknown_shipped_config_name_lists_the_known():
    with pytest.raises(UserError, match="did you mean 'paper'"):
        config.load("papr")


def _folder(tmp_path, n):
    for split in ("train", "test"):
        for cls in ("Benign", "Malignant"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i:03d}.jpg").write_bytes(b"x")
    return layout.discover(tmp_path)


def test_limit_keeps_at_most_n_per_class_and_split_reproducibly(tmp_path):
    found = _folder(tmp_path, 12)
    small = limited(found, 5)
    for split in (small.train, small.test):
        assert split.count(0) == 5 and split.count(1) == 5
        assert list(split.files) == sorted(split.files)
    assert limited(found, 5) == small and limited(found, None) is found
    assert limited(found, 50) == found
