"""Tests for melanoma.config: the shipped configs, TOML/YAML equivalence, one-line errors, keys."""

import dataclasses
import json
from pathlib import Path

import pytest

from melanoma import config
from melanoma.data.augmentation import Augmentation
from melanoma.util.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"

TOML = """
name = "tiny"
seed = 7

[data]
val_fraction = 0.2
interpolation = "bilinear"

[data.synthetic]
n_train_per_class = 4
n_test_per_class = 3
image_size = 40
seed = 11

[defaults]
backbone = "B0"
image_size = 32
weights = "none"
epochs = 2
learning_rate = 1e-4
batch_size = 8
bn_momentum = 0.9

[defaults.augmentation]
rotation_deg = 20
shear_deg = 0.2
horizontal_flip = true

[[variants]]
name = "a"
preprocessing = "samplewise"

[[variants]]
name = "b"
preprocessing = "featurewise"
dropout = 0.25
note = "second row"
"""

YAML = """
name: tiny
seed: 7
data:
  val_fraction: 0.2
  interpolation: bilinear
  synthetic: {n_train_per_class: 4, n_test_per_class: 3, image_size: 40, seed: 11}
defaults:
  backbone: B0
  image_size: 32
  weights: none
  epochs: 2
  learning_rate: 1e-4     # PyYAML alone would read this as the string "1e-4"
  batch_size: 8
  bn_momentum: 0.9
  augmentation:
    rotation_deg: 20.0
    shear_deg: 0.2
    horizontal_flip: true
variants:
  - name: a
    preprocessing: samplewise
  - name: b
    preprocessing: featurewise
    dropout: 0.25
    note: second row
"""


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path, text, name="c.toml"):
    return config.load(write(tmp_path, text, name))


def error_of(tmp_path, text, name="c.toml") -> str:
    with pytest.raises(UserError) as info:
        load_text(tmp_path, text, name)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def variant_toml(**values) -> str:
    """A one-variant config with the given variant keys (TOML literals as strings)."""
    values = {"name": '"v"', "backbone": '"B0"', "weights": '"none"', **values}
    lines = "\n".join(f"{k} = {v}" for k, v in values.items())
    return f'name = "t"\n[[variants]]\n{lines}\n'


# ---------- shipped configs ----------

def test_default_config_loads():
    cfg = config.load(CONFIGS / "default.toml")
    assert cfg.name == "default"
    assert len({v.name for v in cfg.variants}) == len(cfg.variants) >= 4
    assert {v.preprocessing for v in cfg.variants} >= {"samplewise", "featurewise", "native"}
    for v in cfg.variants:  # the CPU smoke run: no download, embedded data
        assert v.weights == "none" and v.resolved_image_size() <= 128
    assert cfg.data.dir is None and cfg.data.val_fraction == 0.15


def test_library_defaults_equal_the_default_config():
    """A minimal config is the CPU smoke run's row, never a silent B6/ImageNet job."""
    default = config.load(CONFIGS / "default.toml")
    minimal = config.from_dict({"name": "m", "variants": [{"name": "v"}]})
    shipped = default.variants[0]
    for key in ("backbone", "image_size", "weights", "epochs", "learning_rate", "batch_size",
                "val_batch_size", "head_units", "dropout", "bn_momentum", "augmentation"):
        assert getattr(minimal.variants[0], key) == getattr(shipped, key), key
    assert minimal.seed == default.seed and minimal.data == default.data
    assert minimal.evaluation == default.evaluation


def test_paper_config_matches_the_original_setup():
    cfg = config.load(CONFIGS / "paper.toml")
    assert [v.name for v in cfg.variants] == [
        "efficient_net_b6_samplewise", "efficient_net_b6_featurewise",
        "efficient_net_b6_samplewise_40", "efficient_net_b6_random_featurewise"]
    rows = {v.name: v for v in cfg.variants}
    for v in cfg.variants:
        assert v.backbone == "B6" and v.resolved_image_size() == 528 and v.bn_momentum == 0.99
        assert (v.learning_rate, v.batch_size, v.val_batch_size) == (1e-4, 16, 8)
    assert [rows[n].weights for n in rows] == ["imagenet", "imagenet", "imagenet", "none"]
    assert [rows[n].preprocessing for n in rows] == ["samplewise", "featurewise", "samplewise",
                                                     "featurewise"]
    assert rows["efficient_net_b6_samplewise_40"].epochs == 40
    assert cfg.data.val_fraction == 0.15 and cfg.data.interpolation == "nearest"
    assert cfg.source == str(CONFIGS / "paper.toml")


# ---------- TOML and YAML ----------

def test_toml_values(tmp_path):
    cfg = load_text(tmp_path, TOML)
    a, b = cfg.variants
    assert (cfg.name, cfg.seed) == ("tiny", 7)
    assert cfg.data == config.DataConfig(None, 0.2, "bilinear", None, config.SyntheticSpec(4, 3, 40, 11))
    assert (a.preprocessing, b.preprocessing, a.dropout, b.dropout) == (
        "samplewise", "featurewise", 0.0, 0.25)
    assert a.augmentation == b.augmentation == Augmentation(20.0, 0.2, True, False)
    assert isinstance(a.augmentation.rotation_deg, float)  # 20 in TOML is normalised
    assert (a.learning_rate, a.epochs, a.bn_momentum, a.val_batch_size) == (1e-4, 2, 0.9, 64)  # default


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_equals_toml(tmp_path, suffix):
    from_toml = load_text(tmp_path, TOML, "c.toml")
    from_yaml = load_text(tmp_path, YAML, "c" + suffix)
    assert dataclasses.replace(from_yaml, source="") == dataclasses.replace(from_toml, source="")
    assert from_yaml.source.endswith(suffix)
    for y, t in zip(from_yaml.variants, from_toml.variants):
        assert y.model_key("d", 1, 0.2, "bilinear") == t.model_key("d", 1, 0.2, "bilinear")


def test_name_defaults_to_file_stem(tmp_path):
    cfg = load_text(tmp_path, '[[variants]]\nname = "v"\n', "my_run.toml")
    assert cfg.name == "my_run" and cfg.seed == 42


def test_to_dict_is_json_data():
    cfg = config.load(CONFIGS / "paper.toml")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["variants"][0]["backbone"] == "B6"
    assert data["variants"][0]["augmentation"]["shear_deg"] == 0.2
    assert data["data"]["synthetic"]["image_size"] == 96


# ---------- errors: one clear line ----------

@pytest.mark.parametrize("values,expected", [
    (dict(learning_rate="-1e-4"), "learning_rate must be a finite number above 0, got -0.0001"),
    (dict(learning_rate="0"), "learning_rate must be a finite number above 0"),
    (dict(learning_rate="inf"), "learning_rate must be a finite number above 0, got inf"),
    (dict(learning_rate="nan"), "learning_rate must be a finite number above 0"),
    (dict(image_size="100000"), "image_size must be in [32, 2048]"),
    (dict(batch_size="0"), "batch_size must be a positive integer, got 0"),
    (dict(val_batch_size="-8"), "val_batch_size must be a positive integer"),
    (dict(epochs="0"), "epochs must be a positive integer"),
    (dict(epochs="1.5"), "epochs must be int, got 1.5"),
    (dict(image_size="31"), "image_size must be in [32, 2048] pixels (the smallest input"),
    (dict(image_size="16"), "got 16"),
    (dict(dropout="1.0"), "dropout must be in [0, 1)"),
    (dict(bn_momentum="1.5"), "bn_momentum must be in (0, 1)"),
    (dict(learning_rat="1e-4"), "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    (dict(preprocessing='"samplewsie"'), "unknown preprocessing 'samplewsie' (did you mean "
                                         "'samplewise'?)"),
    (dict(backbone='"B66"'), "unknown backbone 'B66' (did you mean 'B6'?)"),
    (dict(batch_size='"16"'), "batch_size must be int, got '16'"),
    (dict(freeze_backbone='"yes"'), "freeze_backbone must be bool, got 'yes'"),
    (dict(weights="5"), "weights must be str, got 5"),
    (dict(augmentation='{rotation_deg = "20"}'), "rotation_deg must be float, got '20'"),
    (dict(augmentation='{rotation = 20.0}'), "unknown key 'rotation' (did you mean "
                                             "'rotation_deg'?)"),
    (dict(augmentation='{shear_deg = 90.0}'), "shear_deg in [0, 90)"),
    (dict(augmentation="[1]"), "augmentation must be a table"),
])
def test_bad_variant_values(tmp_path, values, expected):
    message = error_of(tmp_path, variant_toml(**values))
    assert expected in message
    assert "'v'" in message or "unknown preprocessing" in message or "unknown backbone" in message


@pytest.mark.parametrize("text,expected", [
    ('name = "t"\n', "no [[variants]] listed"),
    ('name = "t"\nvariants = []\n', "no [[variants]] listed"),
    ('name = "t"\n[[variants]]\npreprocessing = "native"\n', "variant #1 has no name"),
    ('name = "t"\n[[variants]]\nname = "a"\n[[variants]]\nname = "a"\n',
     "variant names must be unique, got ['a', 'a']"),
    ('seeed = 1\n[[variants]]\nname = "a"\n', "unknown key 'seeed' (did you mean 'seed'?)"),
    ('seed = "1"\n[[variants]]\nname = "a"\n', "seed must be int, got '1'"),
    ('defaults = [1]\n[[variants]]\nname = "a"\n', "defaults must be a table"),
    ('variants = ["a"]\n', "variant #1 must be a table"),
    ('[data]\nval_fraction = 1.0\n[[variants]]\nname = "a"\n', "val_fraction must be in (0, 1)"),
    ('[data]\nval_fraction = "0.2"\n[[variants]]\nname = "a"\n', "val_fraction must be float"),
    ('[data]\ninterpolation = "bilinar"\n[[variants]]\nname = "a"\n',
     "unknown interpolation 'bilinar'"),
    ('[data]\nvalfraction = 0.2\n[[variants]]\nname = "a"\n',
     "data: unknown key 'valfraction' (did you mean 'val_fraction'?)"),
    ('[data.synthetic]\nimage_size = 31\n[[variants]]\nname = "a"\n',
     "data.synthetic: image_size must be in [32, 2048]"),
    ('seed = -1\n[[variants]]\nname = "a"\n', "seed must be an integer >= 0, got -1"),
    ('[[variants]]\nname = "../escape_up"\n', "name must be a safe name (letters, digits"),
    ('[[variants]]\nname = "/abs/path/x"\n', "name must be a safe name"),
    ('[[variants]]\nname = "a/b"\n', "name must be a safe name"),
    ('[[variants]]\nname = "模型甲"\n', "name must be a safe name"),
    ('name = "../up"\n[[variants]]\nname = "a"\n', "config: name must be a safe name"),
    ('[data]\nlimit = 1\n[[variants]]\nname = "a"\n', "data: limit must be an integer >= 2"),
    ('[data.synthetic]\nn_train_per_class = 1\n[[variants]]\nname = "a"\n',
     "n_train_per_class must be at least 2"),
    ('name = "t"\nseed = \n', "is not valid"),
    ('[[variants]\nname = "a"\n', "is not valid"),
])
def test_bad_config_values(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_defaults_errors_name_the_variant(tmp_path):
    text = '[defaults]\nbatch_size = 0\n[[variants]]\nname = "a"\n'
    assert error_of(tmp_path, text).startswith("variant 'a': batch_size must be")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(UserError, match=r"cannot read config .*missing\.toml"):
        config.load(tmp_path / "missing.toml")
    with pytest.raises(UserError, match="cannot read config"):
        config.load(tmp_path)  # a folder
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')  # not UTF-8
    with pytest.raises(UserError, match=r"cannot read config .*latin1\.toml: 'utf-8' codec"):
        config.load(bad)
    with pytest.raises(UserError, match=r"use a \.toml, \.yaml or \.yml file"):
        config.load(write(tmp_path, "name = 'x'", "c.json"))


def test_invalid_yaml(tmp_path):
    assert "is not valid" in error_of(tmp_path, "name: [unclosed\n", "c.yaml")
    assert "mapping at the top level" in error_of(tmp_path, "- a\n- b\n", "c.yaml")


# ---------- keys ----------

BASE = config.VariantConfig(name="a", preprocessing="samplewise", backbone="B0", image_size=32,
                            weights="none", epochs=2, learning_rate=1e-4, bn_momentum=None)


def model_key(v, data="data1", seed=1):
    return v.model_key(data, seed, 0.15, "nearest")


def test_model_key_ignores_name_and_note():
    assert model_key(BASE) == model_key(dataclasses.replace(BASE, name="b", note="hello"))


@pytest.mark.parametrize("change", [
    dict(epochs=3), dict(preprocessing="featurewise"), dict(learning_rate=1e-3),
    dict(batch_size=4), dict(image_size=64), dict(weights="imagenet"), dict(bn_momentum=0.9),
    dict(augmentation=Augmentation(rotation_deg=20.0)),
])
def test_model_key_changes_with_what_changes_the_model(change):
    assert model_key(BASE) != model_key(dataclasses.replace(BASE, **change))


def test_model_key_changes_with_seed_data_split_and_interpolation():
    key = model_key(BASE)
    assert key != model_key(BASE, seed=2)
    assert key != model_key(BASE, data="data2")
    assert key != BASE.model_key("data1", 1, 0.2, "nearest")
    assert key != BASE.model_key("data1", 1, 0.15, "bilinear")


def test_model_key_same_for_default_and_explicit_image_size():
    implicit = dataclasses.replace(BASE, image_size=None)
    explicit = dataclasses.replace(BASE, image_size=224)  # B0's default
    assert model_key(implicit) == model_key(explicit)
    assert implicit.architecture_key(1) == explicit.architecture_key(1)


def test_same_config_written_with_int_or_float_has_one_key(tmp_path):
    one = load_text(tmp_path, variant_toml(dropout="0", augmentation="{rotation_deg = 20}"))
    two = load_text(tmp_path, variant_toml(dropout="0.0", augmentation="{rotation_deg = 20.0}"))
    assert model_key(one.variants[0]) == model_key(two.variants[0])
    assert one.variants[0].architecture_key(1) == two.variants[0].architecture_key(1)


@pytest.mark.parametrize("change", [
    dict(preprocessing="featurewise"), dict(epochs=30), dict(learning_rate=1e-2),
    dict(batch_size=4), dict(augmentation=Augmentation(rotation_deg=20.0)), dict(name="z"),
])
def test_architecture_key_ignores_training_choices(change):
    assert BASE.architecture_key(1) == dataclasses.replace(BASE, **change).architecture_key(1)


@pytest.mark.parametrize("change", [
    dict(backbone="B1"), dict(image_size=64), dict(weights="imagenet"), dict(head_units=8),
    dict(dropout=0.1), dict(freeze_backbone=True), dict(bn_momentum=0.9),
])
def test_architecture_key_changes_with_the_network(change):
    assert BASE.architecture_key(1) != dataclasses.replace(BASE, **change).architecture_key(1)


def test_architecture_key_changes_with_seed():
    assert BASE.architecture_key(1) != BASE.architecture_key(2)


def test_variant_augmentation_merges_with_defaults():
    from melanoma.config import from_dict

    cfg = from_dict({
        "defaults": {"augmentation": {"rotation_deg": 20.0, "horizontal_flip": True}},
        "variants": [{"name": "a", "preprocessing": "rescale"},
                     {"name": "b", "preprocessing": "rescale",
                      "augmentation": {"rotation_deg": 5.0}}]})
    a, b = cfg.variants
    assert (a.augmentation.rotation_deg, a.augmentation.horizontal_flip) == (20.0, True)
    assert (b.augmentation.rotation_deg, b.augmentation.horizontal_flip) == (5.0, True)


# ---------- model-file rows ----------

def test_a_model_file_row_is_its_own_small_type():
    cfg = config.from_dict({"name": "m", "defaults": {"epochs": 3, "val_batch_size": 16,
                                                      "trust_model_code": True},
                            "variants": [{"name": "file", "model_file": "m.keras"},
                                         {"name": "trained"}]})
    row, trained = cfg.variants
    assert isinstance(row, config.ModelFileRow) and isinstance(trained, config.VariantConfig)
    assert (row.preprocessing, row.val_batch_size, row.trust_model_code) == ("auto", 16, True)
    assert not hasattr(row, "epochs") and trained.epochs == 3  # training keys stay on trained rows
    assert trained.model_file is None  # every row answers "which file?"


@pytest.mark.parametrize("table, message", [
    ({"epochs": 2}, "epochs cannot be set on a model_file row"),
    ({"preprocessing": "samplewize"}, "did you mean 'samplewise'"),
    ({"val_batch_size": 0}, "val_batch_size must be a positive integer"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_bad_model_file_rows_are_one_line_errors(table, message):
    with pytest.raises(UserError, match=message) as error:
        config.from_dict({"name": "m", "variants": [{"name": "f", "model_file": "m.h5", **table}]})
    assert "\n" not in str(error.value)


def test_tune_refuses_a_model_file_row_as_its_base():
    with pytest.raises(UserError, match="names an existing model file"):
        config.from_dict({"name": "m", "variants": [{"name": "f", "model_file": "m.h5"}],
                          "tune": {"max_trials": 1}})


def test_a_folder_named_like_a_shipped_config_does_not_hide_it(tmp_path, monkeypatch):
    """``melanoma-bench bench --out bench`` leaves a folder ``bench``; the next ``bench`` (whose
    default config is named ``bench``) still reads the shipped config, not that folder."""
    from melanoma.config.files import SHIPPED, resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench").mkdir()
    assert resolve("bench") == SHIPPED / "bench.toml"
    assert config.load("bench").name == "bench"
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="not a file and not a shipped config"):
        resolve("mine")
