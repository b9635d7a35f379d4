"""The ``melanoma-bench`` console script: one subcommand per job.

Exit codes: 0 ok, 2 user error (one line on stderr), 1 internal error. ``--debug`` shows
tracebacks for everything.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from melanoma.errors import UserError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.toml"


def _run(args) -> int:
    from melanoma import config

    from .run import run_benchmark

    cfg = config.select_variants(config.load(args.config), args.variant)
    rows = run_benchmark(cfg, data_dir=args.data_dir, out_dir=args.out,
                         models_dir=args.models_dir, retrain=args.retrain)
    from melanoma.report import markdown_table

    print(markdown_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melanoma-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train or load each variant and write the report")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                     help="TOML or YAML config (default: the CPU smoke config)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="root with train/ and test/ (default: generated synthetic data)")
    run.add_argument("--out", type=Path, default=None,
                     help="output folder (default: reports/<config name>)")
    run.add_argument("--models-dir", type=Path, default=Path("models"),
                     help="where trained models are cached (default: models/)")
    run.add_argument("--variant", action="append", default=None, metavar="NAME",
                     help="run only this variant of the config (repeatable)")
    run.add_argument("--retrain", action="store_true",
                     help="train again even when a model with the same config exists")
    run.set_defaults(handler=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"melanoma-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melanoma-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
