"""melanoma-bench run: train or load every configured variant and write the report.

    melanoma-bench run                                       # embedded data, CPU default config
    melanoma-bench run --set defaults.epochs=1 --limit 20    # a one-minute smoke run
    melanoma-bench run --config paper --data-dir ~/data/melanoma
"""
from __future__ import annotations

from pathlib import Path

from melanoma.cli import options


def register(commands) -> None:
    parser = options.add_command(
        commands, "run", "Train (or load) each variant of a config and write the report.",
        ("melanoma-bench run",
         "melanoma-bench run --set defaults.epochs=1 --limit 20 --out reports/smoke",
         "melanoma-bench run --config isic2017 --data-dir ../shared/data/isic2017",
         "melanoma-bench run --config paper --data-dir ~/data/melanoma --shard 1/4"))
    options.add_config(parser)
    options.add_data_dir(parser)
    options.add_limit(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: reports/<config name>)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"),
                        help="where trained models are cached (default: models/)")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME",
                        help="run only this variant of the config (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a report of another config, data set or limit in --out "
                             "(default: refuse; a rerun of the same run always rewrites its own)")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even when a model with the same config exists")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="train only jobs I, I+N, I+2N, ... of the (variant, seed) jobs "
                             "(1-based; e.g. a SLURM array task); the process that finds every "
                             "model saved writes the report")
    parser.add_argument("--strict", action="store_true",
                        help="treat data pre-flight warnings (unreadable, tiny, huge, hidden, "
                             "non-image files, ...) as errors (exit 2)")
    options.add_wide(parser)
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma import config
    from melanoma.runs.jobs import parse_shard

    shard = parse_shard(args.shard)
    cfg = config.select_variants(options.config_from(args), args.variant)
    options.check_data_dir(args, cfg)  # user mistakes fail before TensorFlow or JAX loads
    from melanoma.runs.benchmark import run_benchmark

    rows = run_benchmark(cfg, data_dir=args.data_dir, out_dir=args.out,
                         models_dir=args.models_dir, retrain=args.retrain, strict=args.strict,
                         shard=shard, overwrite=args.overwrite)
    if rows:  # [] when other processes still train: the last of them writes the report
        options.print_table(rows, args.wide)
    return 0
