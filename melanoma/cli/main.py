"""The ``melanoma-bench`` console script: one subcommand per job (modules in melanoma/cli/).

Exit codes: 0 ok, 2 user error (one line on stderr), 1 internal error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). ``--debug`` shows tracebacks for everything.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from melanoma.cli import COMMANDS
from melanoma.util import backend, logs, tfsetup
from melanoma.util.errors import UserError


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("melanoma-bench")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melanoma-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--deterministic", action="store_true",
                        help="fixed threads and CPU kernels (same as MELANOMA_DETERMINISTIC=1): "
                             "bitwise-repeatable on one machine; see docs/determinism.md")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="only warnings and errors on stderr (the table still goes to stdout)")
    loudness.add_argument("-v", "--verbose", action="count", default=0,
                          help="more detail on stderr (logger names, debug messages)")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks remove temporary files."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    tfsetup.quiet_tensorflow_logs()
    args = build_parser().parse_args(argv)
    logs.setup(-1 if args.quiet else args.verbose)
    if args.deterministic:
        backend.use_deterministic_mode()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.handler(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"melanoma-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melanoma-bench: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Terminated:
        print("melanoma-bench: terminated (rerun the same command to resume)", file=sys.stderr)
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
