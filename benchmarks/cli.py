"""The ``melanoma-bench`` console script: one subcommand per job (see benchmarks/commands/).

Exit codes: 0 ok, 2 user error (one line on stderr), 1 internal error, 130 interrupted.
``--debug`` shows tracebacks for everything.
"""
from __future__ import annotations

import argparse
import os
import sys

from melanoma.errors import UserError

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melanoma-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
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
