"""``melanoma-bench evaluate``: evaluate existing model files without training.

    melanoma-bench evaluate original/*.h5 --data-dir ~/data/melanoma --out reports/original
    melanoma-bench evaluate model.keras --data-dir data/ham --val-dir data/ham/val   # + thr_*
    melanoma-bench evaluate model.keras --data-dir data/ham --threshold 0.3

Writes the same outputs as ``run`` (one row per model). A model that cannot be evaluated
gets one line on stderr; the others are still evaluated and reported; exit status 2.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from melanoma.cli import options as cli_options
from melanoma.data.decode import INTERPOLATIONS

log = logging.getLogger("melanoma.cli")


def register(commands) -> None:
    parser = cli_options.add_command(
        commands, "evaluate", "Evaluate existing model files (.keras, tf.keras 2.x .h5, "
                              "SavedModel) without training and write the report.",
        ("melanoma-bench evaluate original/*.h5 --data-dir ~/data/melanoma --out reports/original",
         "melanoma-bench evaluate model.keras --data-dir data/ham --val-dir data/ham/val",
         "melanoma-bench evaluate model.keras --data-dir data/ham --threshold 0.3"))
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                        help=".keras or .h5 file, or SavedModel folder")
    cli_options.add_data_dir(parser, help_text="root with test/ (and train/), or a folder "
                             "holding Benign/ and Malignant/ directly (required)")
    parser.add_argument("--preprocessing", default=None, metavar="NAME",
                        help="preprocessing when the model has no sidecar (samplewise, "
                             "featurewise, rescale, native); default: from the file name")
    parser.add_argument("--variant", dest="variant_deprecated", default=None,
                        help=argparse.SUPPRESS)  # the old name of --preprocessing: still read
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
    parser.add_argument("--val-dir", type=Path, default=None, metavar="DIR",
                        help="folder with Benign/ and Malignant/: the operating point is chosen "
                             "on its predictions as run chooses it (Youden's J); thr_* columns")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="a given operating point in [0, 1] instead (thr_* columns at T)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the bootstrap intervals (default 0: reruns are identical)")
    parser.add_argument("--out", type=Path, default=Path("reports") / "evaluate",
                        help="output folder (default: reports/evaluate)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a report of other models or data in --out (default: "
                             "refuse; the same command always rewrites its own)")
    parser.add_argument("--trust-model-code", action="store_true",
                        help="allow files that contain code (Lambda layers, SavedModels); "
                             "only for files whose origin you trust")
    cli_options.add_wide(parser)
    parser.set_defaults(handler=main)


def options_from(args):
    """EvalOptions from the flags; malformed flags fail before any model is loaded."""
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.evaluation.rows import EvalSettings
    from melanoma.runs import model_files
    from melanoma.util.errors import UserError

    if args.variant_deprecated is not None:
        log.warning("warning: --variant is deprecated for evaluate; use --preprocessing")
        if args.preprocessing not in (None, args.variant_deprecated):
            raise UserError("--variant and --preprocessing disagree; give --preprocessing only")
        args.preprocessing = args.variant_deprecated
    if args.batch_size is not None and args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # NaN fails too
        raise UserError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    if args.threshold is not None and args.val_dir is not None:
        raise UserError("give --threshold or --val-dir, not both (--val-dir chooses the threshold)")
    if args.preprocessing:
        get_preprocessing(args.preprocessing)  # an unknown name lists the known ones
    return model_files.EvalOptions(
        variant=args.preprocessing, featurewise_mean=model_files.parse_mean(args.featurewise_mean),
        trust_code=args.trust_model_code, interpolation=args.interpolation,
        batch_size=args.batch_size, val_dir=args.val_dir,
        settings=EvalSettings(seed=args.seed, threshold=args.threshold))


def main(args) -> int:
    from melanoma.runs import model_files

    options = options_from(args)
    data_dir = cli_options.data_dir_from(args, required=True)
    config = {k: str(v) if isinstance(v, Path) else v
              for k, v in vars(args).items()
              if k not in ("handler", "models", "wide", "overwrite", "debug")}
    config.update(name=f"evaluate ({args.out.name})")
    rows, failures = model_files.evaluate_models(args.models, data_dir, args.out, options,
                                                 args.name, config, args.debug,
                                                 args.overwrite)
    if rows:
        cli_options.print_table(rows, args.wide)
    if failures:
        log.error("melanoma-bench: %d of %d models failed%s", len(failures), len(args.models),
                  "" if rows else "; nothing written")
        return 2
    return 0
