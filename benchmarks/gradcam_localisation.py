"""Does Grad-CAM point at the lesion? Train a model on the generated data, then measure.

    python -m benchmarks.gradcam_localisation --model tiny --seeds 0 1 2 3 4
    python -m benchmarks.gradcam_localisation --model b0 --size 64 --out reports/gradcam

On the correctly classified malignant test images: mean share of heat-map mass inside the
generator's lesion mask vs the masks' mean area (melanoma.evaluation.localisation). ``b0`` is
the default run's model (EfficientNet-B0, random weights, lr 1e-3, BatchNorm momentum 0.9,
the default augmentation); ``tiny`` a 3-layer CNN whose last feature map is size/4 wide.
Prints one JSON object per seed; with ``--out`` also writes the localisation figure (first 8
images) and the JSON lines there.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from melanoma.data import decode as images
from melanoma.data import layout, synthetic

SPEC = synthetic.SyntheticSpec(n_train_per_class=100, n_test_per_class=50, image_size=96,
                               seed=1234)  # each image has its own seed: n_train leaves test alone
SETTINGS = {  # model -> defaults (size, epochs, learning rate, augmentation, training images)
    "tiny": {"size": 64, "epochs": 15, "learning_rate": 3e-3, "augment": False,
             "train_per_class": 100},
    "b0": {"size": 64, "epochs": 10, "learning_rate": 1e-3, "augment": True,
           "train_per_class": 150},
}


def build_model(name: str, size: int):
    """The model to train: ``tiny`` (3 convolutions, GAP, softmax) or the factory's B0."""
    import keras

    if name == "b0":
        from melanoma.models.factory import build_classifier

        return build_classifier("B0", size, head_units=128, bn_momentum=0.9)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((size, size, 3)),
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu", name="top_activation"),
        layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])


def load_split(root: Path, split, size: int):
    """(uint8 pixels, labels, file names relative to ``root``) of one split at ``size``."""
    loaded = images.load_images(split.files, split.labels, size, "nearest")
    return loaded.pixels, loaded.labels, [Path(f).relative_to(root).as_posix()
                                          for f in loaded.files]


def train_and_localise(name: str, root: Path, size: int, epochs: int, learning_rate: float,
                       seed: int, augment: bool = False, layers=(None,), spec=SPEC):
    """Train ``name`` on ``root`` (``spec``'s data) with ``seed``; ({layer: Localisation}
    (None: the default layer), test AUC, test pixels, training seconds)."""
    import keras
    from sklearn.metrics import roc_auc_score

    from melanoma.data.augmentation import Augmentation
    from melanoma.data.loader import array_batches
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.evaluation.localisation import check_synthetic
    from melanoma.models.image_input import for_inference, with_image_input
    from melanoma.models.training import compile_classifier

    found = layout.discover(root)
    pre = get_preprocessing("samplewise")
    aug = (Augmentation(rotation_deg=20.0, shear_deg=0.2, horizontal_flip=True, vertical_flip=True)
           if augment else Augmentation())
    keras.utils.set_random_seed(seed)
    model = build_model(name, size)  # the network; trained behind the uint8 input layer
    trained = compile_classifier(with_image_input(model, aug, pre, seed), learning_rate,
                                 jit_compile=False)
    x, y, _ = load_split(root, found.train, size)
    started = time.perf_counter()
    data = array_batches(x, y, 32, shuffle=True, seed=seed, repeat=True)
    trained.fit(data, epochs=epochs, steps_per_epoch=data.batches_per_epoch, verbose=0)
    seconds = time.perf_counter() - started
    tx, ty, files = load_split(root, found.test, size)
    probs = for_inference(model, pre).predict(array_batches(tx, None, 64), verbose=0)[:, 1]
    results = {layer: check_synthetic(model, pre, spec, files, ty, probs, tx, layer=layer)
               for layer in layers}
    return results, float(roc_auc_score(ty, probs)), tx, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SETTINGS), default="tiny")
    parser.add_argument("--size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--layers", nargs="+", default=[None],
                        help="Grad-CAM layer(s) (default: top_activation)")
    parser.add_argument("--train-per-class", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, help="folder for the figure(s) and JSON lines")
    args = parser.parse_args(argv)
    given = {"size": args.size, "epochs": args.epochs, "train_per_class": args.train_per_class}
    settings = {**SETTINGS[args.model], **{k: v for k, v in given.items() if v}}
    spec = replace(SPEC, n_train_per_class=settings["train_per_class"])
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate(Path(tmp), spec)
        for seed in args.seeds:
            results, auc, pixels, seconds = train_and_localise(
                args.model, root, settings["size"], settings["epochs"],
                settings["learning_rate"], seed, settings["augment"], args.layers, spec)
            for layer, result in results.items():
                line = {"model": args.model, **settings, "seed": seed, "test_auc": round(auc, 4),
                        "train_seconds": round(seconds, 1), **result.summary}
                print(json.dumps(line), flush=True)
                if args.out:
                    _write(args.out, line, result, pixels, layer)


def _write(out: Path, line: dict, result, pixels, layer: str | None) -> None:
    from melanoma.reporting.localisation_figure import localisation_figure

    out.mkdir(parents=True, exist_ok=True)
    stem = (f"gradcam_localisation_{line['model']}_{line['size']}px_seed{line['seed']}"
            + (f"_{layer}" if layer else ""))
    with open(out / "gradcam_localisation.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    if len(result.indices):
        shown = slice(0, 8)
        title = (f"Grad-CAM ({layer or 'top_activation'}), {line['model']} {line['size']} px, "
                 f"seed {line['seed']}: mass in "
                 f"lesion {line['mean_mass_inside']:.2f} vs area {line['mean_area_fraction']:.2f}"
                 f" (n={line['n']}; other images' masks: {line['shuffled_mass_inside']:.2f})")
        localisation_figure(np.asarray(pixels)[result.indices[shown]], result.masks[shown],
                            result.heatmaps[shown], out / f"{stem}.png",
                            result.captions()[shown], title=title)


if __name__ == "__main__":
    main()
