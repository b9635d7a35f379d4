"""The model key: a hash of the full training recipe plus a format version. Every field that
changes the weights enters it (no per-field exceptions), the run's machine-resolved context
too (the Keras backend, a fold), and loading checks the whole recipe."""
from __future__ import annotations

import dataclasses
import json

import pytest

from melanoma import config
from melanoma.models import storage
from melanoma.runs import jobs
from melanoma.util.errors import UserError
from melanoma.util.keys import digest

BASE = config.VariantConfig(name="a", preprocessing="samplewise", backbone="B0", image_size=32,
                            weights="none", epochs=2, learning_rate=1e-4, bn_momentum=None)
CFG = config.from_dict({"seed": 3, "variants": [{"name": "a", "image_size": 32}]})

# one changed value per field that enters the key; a new VariantConfig field must be added
# here (the test below fails until it is), so nobody adds a field the key silently ignores
CHANGES = {
    "preprocessing": "featurewise", "backbone": "B1", "image_size": 64, "weights": "imagenet",
    "epochs": 3, "learning_rate": 1e-3, "batch_size": 4, "val_batch_size": 8, "head_units": 7,
    "dropout": 0.5, "freeze_backbone": True, "bn_momentum": 0.5,
    "augmentation": config.Augmentation(rotation_deg=5.0), "mixed_precision": True,
    "jit_compile": True, "class_weight": "balanced", "balanced_sampling": True,
    "keep_epoch": "best",
}


def key_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(config.VariantConfig)
            if f.metadata.get("key", True)}


def test_every_key_field_is_in_the_recipe_and_changes_the_key():
    assert key_fields() == set(CHANGES), "declare the new field's change in CHANGES"
    base = BASE.model_key("d", 1, 0.15, "nearest")
    for name, value in CHANGES.items():
        changed = dataclasses.replace(BASE, **{name: value})
        assert name in changed.recipe()
        assert changed.model_key("d", 1, 0.15, "nearest") != base, name


def test_the_key_is_the_hash_of_the_recipe_with_its_format_version():
    recipe = jobs.job_recipe(CFG.variants[0], "data", CFG, 5)
    assert recipe["format"] == config.KEY_FORMAT
    assert recipe["split_seed"] == 3 and recipe["seed"] == 5  # always both: no exceptions
    assert jobs.job_key(CFG.variants[0], "data", CFG, 5) == digest(recipe)


def test_the_keras_backend_enters_the_key(monkeypatch):
    """Another Keras backend draws other random numbers: another model."""
    from melanoma.util import backend

    v = CFG.variants[0]
    here = jobs.job_key(v, "d", CFG, 1)
    monkeypatch.setattr(backend, "name", lambda: "jax")
    assert jobs.job_key(v, "d", CFG, 1) != here
    assert jobs.job_recipe(v, "d", CFG, 1)["backend"] == "jax"


def test_the_ignored_augment_on_key_does_not_change_the_key():
    """augment_on is accepted from older configs and ignored (augmentation always runs in
    the model): it must not split one training into two keys."""
    v = CFG.variants[0]
    assert dataclasses.replace(v, augment_on="device").model_key("d", 1, 0.15, "nearest") \
        == v.model_key("d", 1, 0.15, "nearest")


def _sidecar(tmp_path, recipe, key):
    (tmp_path / f"a-{key}.keras").write_bytes(b"model")
    meta = {"recipe": recipe, "config_key": key, "preprocessing": "samplewise"}
    (tmp_path / f"a-{key}.json").write_text(json.dumps(meta))


def test_loading_checks_the_whole_recipe(tmp_path):
    recipe = jobs.job_recipe(CFG.variants[0], "d", CFG, 1)
    key = digest(recipe)
    _sidecar(tmp_path, recipe, key)
    assert storage.find(tmp_path, key, {"recipe": recipe}).sidecar["recipe"] == recipe
    other = {**recipe, "interpolation": "bilinear"}  # a sidecar edited after the fact
    _sidecar(tmp_path, other, key)
    with pytest.raises(UserError, match="does not hash to the key"):
        storage.find(tmp_path, key)


def test_a_sidecar_without_a_recipe_is_not_taken_for_the_model(tmp_path):
    """A model saved before the recipe existed has another key anyway (format version);
    one renamed to a new key is refused, not loaded."""
    _sidecar(tmp_path, None, "0123456789abcdef")
    with pytest.raises(UserError, match="damaged model sidecar"):
        storage.find(tmp_path, "0123456789abcdef")
