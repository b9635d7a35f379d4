"""How long the evaluation takes next to the model's own prediction time.

    python -m benchmarks.measure_evaluation                 # B0 at 64 px, measured
    python -m benchmarks.measure_evaluation --b6 16         # also time B6 at 528 px on 16 images

Evaluation: 1,000 test predictions (500 per class) and 200 validation predictions for each of
5 variants, every metric with 1,000 bootstrap resamples, DeLong vs the best, the validation
threshold, clean-subset rows, every plot and index.html (``report.write_run``). Prediction:
the same 1,000 images through an EfficientNet (random weights; speed does not depend on them)
with the runner's tf.data pipeline. Prints one JSON object; the ratio is evaluation/prediction.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_TEST, N_VAL, N_VARIANTS, RESAMPLES = 1000, 200, 5, 1000


def fake_predictions(n: int, seed: int, prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    files = [f"{prefix}/{'Malignant' if v else 'Benign'}/{i:05d}.jpg" for i, v in enumerate(y)]
    return pd.concat([pd.DataFrame({
        "variant": f"variant_{k}", "file": files, "label": y,
        "prob_malignant": 1 / (1 + np.exp(-(y * (1 + 0.3 * k) + rng.normal(0, 1, n)) + 0.5))})
        for k in range(N_VARIANTS)], ignore_index=True)


def time_evaluation() -> dict:
    """Seconds for the whole report (metrics, intervals, DeLong, plots, HTML) and for the
    tables alone."""
    from melanoma.evaluation.rows import EvalSettings, evaluate
    from melanoma.reporting import tables as report

    test, val = fake_predictions(N_TEST, 0, "test"), fake_predictions(N_VAL, 1, "train")
    clean = set(test["file"].unique()[::4][:750])
    settings = EvalSettings(seed=0, bootstrap_resamples=RESAMPLES)
    started = time.perf_counter()
    evaluate(test, val, settings, clean)
    tables = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report.write_run(Path(out), test, {}, {}, {"config": {"name": "measure"}, "seed": 0}, val,
                         settings, clean, {"n_test": N_TEST})
        total = time.perf_counter() - started
    return {"tables_seconds": round(tables, 2), "full_report_seconds": round(total, 2)}


def time_prediction(backbone: str, size: int, n: int, batch: int) -> float:
    """Seconds to predict ``n`` images at ``size`` px (after one warm-up batch)."""
    import keras

    from melanoma.data.loader import array_batches
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models.factory import build_classifier
    from melanoma.models.image_input import for_inference

    keras.utils.set_random_seed(0)
    network = build_classifier(backbone, size, "none", 128, 0.0, False, None)
    pixels = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    model = for_inference(network, get_preprocessing("samplewise"))
    model.predict(array_batches(pixels[:batch], None, batch), verbose=0)  # warm-up
    started = time.perf_counter()
    model.predict(array_batches(pixels, None, batch), verbose=0)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--b6", type=int, default=0, metavar="N",
                        help="also time EfficientNet-B6 at 528 px on N images and extrapolate")
    args = parser.parse_args(argv)
    result = {"n_test": N_TEST, "n_variants": N_VARIANTS, "bootstrap_resamples": RESAMPLES,
              **time_evaluation()}
    b0 = time_prediction("B0", 64, N_TEST, 64)
    result["predict_b0_64px_seconds_per_1000"] = round(b0, 2)
    result["ratio_report_vs_b0_64px_one_variant"] = round(result["full_report_seconds"] / b0, 3)
    result["ratio_report_vs_b0_64px_5_variants"] = round(
        result["full_report_seconds"] / (N_VARIANTS * b0), 3)
    if args.b6:
        b6 = time_prediction("B6", 528, args.b6, min(8, args.b6)) * N_TEST / args.b6
        result["predict_b6_528px_seconds_per_1000_extrapolated"] = round(b6, 1)
        result["ratio_report_vs_b6_528px_5_variants"] = round(
            result["full_report_seconds"] / (N_VARIANTS * b6), 4)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
