"""``melanoma-bench evaluate``: evaluate existing model files without training.

    melanoma-bench evaluate original/*.h5 --data-dir ~/data/melanoma --out reports/original

Writes the same outputs as ``run`` (one row per model). A model that cannot be evaluated
gets one line on stderr; the others are still evaluated and reported; exit status 2.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from melanoma.images import INTERPOLATIONS


def register(commands) -> None:
    parser = commands.add_parser("evaluate", help="evaluate existing model files (.keras, "
                                 "tf.keras 2.x .h5, SavedModel) and write the report")
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                        help=".keras or .h5 file, or SavedModel folder")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="root with test/ (and train/), or a folder holding Benign/ and "
                             "Malignant/ directly")
    parser.add_argument("--variant", default=None, metavar="NAME",
                        help="preprocessing when the model has no sidecar (samplewise, "
                             "featurewise, rescale, native); default: from the file name")
    parser.add_argument("--featurewise-mean", default=None, metavar="R,G,B",
                        help="training mean of x/255 for featurewise models without one "
                             "(default: computed from the train/ split of --data-dir)")
    parser.add_argument("--name", action="append", default=None, metavar="NAME",
                        help="row name, once per MODEL in order (default: the sidecar's "
                             "variant name, else the file name without suffix)")
    parser.add_argument("--interpolation", choices=sorted(INTERPOLATIONS), default=None,
                        help="resize filter (default: the sidecar's, else nearest, as "
                             "flow_from_directory)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="prediction batch (default: the sidecar's, else 8)")
    parser.add_argument("--out", type=Path, default=Path("reports") / "evaluate",
                        help="output folder (default: reports/evaluate)")
    parser.add_argument("--trust-model-code", action="store_true",
                        help="allow files that contain code (Lambda layers, SavedModels); "
                             "only for files whose origin you trust")
    parser.set_defaults(handler=main)


def quiet_tensorflow() -> dict:
    """As ``run``: no retracing chatter, deterministic ops on CPU; returns the hardware."""
    import tensorflow as tf

    from melanoma import provenance

    tf.get_logger().setLevel("ERROR")
    hardware = provenance.devices()
    print(f"device: {provenance.describe_device(hardware)}", file=sys.stderr, flush=True)
    if not hardware["gpus"]:
        tf.config.experimental.enable_op_determinism()
    return hardware


def options_from(args):
    """EvalOptions from the flags; malformed flags fail before any model is loaded."""
    from melanoma import evaluation
    from melanoma.errors import UserError
    from melanoma.preprocessing import get_preprocessing

    if args.name is not None and len(args.name) != len(args.models):
        raise UserError(f"--name given {len(args.name)} times for {len(args.models)} models")
    if args.batch_size is not None and args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.variant:
        get_preprocessing(args.variant)  # an unknown name lists the known ones
    return evaluation.EvalOptions(
        variant=args.variant, featurewise_mean=evaluation.parse_mean(args.featurewise_mean),
        trust_code=args.trust_model_code, interpolation=args.interpolation,
        batch_size=args.batch_size)


def evaluate_each(args, data, options) -> tuple[list, list]:
    """Every model in turn; a failure is one stderr line and does not stop the others."""
    from melanoma import evaluation
    from melanoma.errors import UserError
    from melanoma.loading import first_line

    results, failures = [], []
    names = args.name or [None] * len(args.models)
    for i, (path, name) in enumerate(zip(args.models, names), 1):
        try:
            result = evaluation.evaluate_file(path, data, options, name)
        except Exception as error:  # noqa: BLE001 - one line per model, never a traceback
            if args.debug and not isinstance(error, UserError):
                raise
            line = (str(error) if isinstance(error, UserError)
                    else f"{path}: unexpected {first_line(error)}")
            failures.append([str(path), line])
            print(f"melanoma-bench: error: {line}", file=sys.stderr, flush=True)
            continue
        print(f"[{i}/{len(args.models)}] {result.name}: {result.spec['spec']}", file=sys.stderr,
              flush=True)
        results.append(result)
    return results, failures


def main(args) -> int:
    from melanoma import evaluation
    from melanoma.report import markdown_table

    options = options_from(args)
    data = evaluation.EvalData.from_dir(args.data_dir)
    started = time.perf_counter()
    hardware = quiet_tensorflow()
    print(f"data: {data.root} (test {len(data.test)} files"
          f"{'' if data.train is None else f', train {len(data.train)} files'})",
          file=sys.stderr, flush=True)
    results, failures = evaluate_each(args, data, options)
    if results:
        config = {k: str(v) if isinstance(v, Path) else v
                  for k, v in vars(args).items() if k != "handler"}
        config.update(names=args.name, name=f"evaluate ({args.out.name})",
                      models=[str(m) for m in args.models])
        rows = evaluation.write_report(args.out, results, data, failures, config, hardware,
                                       time.perf_counter() - started)
        print(f"wrote {args.out}/ (results.json, results.csv, results.md, predictions.csv, "
              f"plots)", file=sys.stderr, flush=True)
        print(markdown_table(rows))
    if failures:
        print(f"melanoma-bench: {len(failures)} of {len(args.models)} models failed"
              + ("" if results else "; nothing written"), file=sys.stderr, flush=True)
        return 2
    return 0
