"""The melanoma-bench console script: one subcommand per job (modules in melanoma/cli/).

Exit codes: 0 ok, 2 user error (one line on stderr), 1 internal error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). --debug shows tracebacks for everything.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from melanoma.cli import COMMANDS
from melanoma.util import backend, logs, tfsetup
from melanoma.util.errors import UserError

SUMMARY = "Benchmark and evaluate melanoma image classifiers (Keras 3)."
EPILOG = """examples:
  melanoma-bench run                                  the default job on generated data
  melanoma-bench run --set defaults.epochs=1 --limit 20   a one-minute smoke run
  melanoma-bench run --config isic2017 --data-dir DIR     your own images
  melanoma-bench report reports/default               rebuild a report, no model needed
  melanoma-bench COMMAND --help                       each command's options and examples

exit status: 0 done, 2 user error (one line on stderr), 1 internal error,
130 interrupted, 143 terminated"""


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("melanoma-bench")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melanoma-bench", description=SUMMARY, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--deterministic", action="store_true",
                        help="fixed threads and CPU kernels (same as MELANOMA_DETERMINISTIC=1): "
                             "bitwise-repeatable on one machine; see docs/determinism.md")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="only warnings and errors on stderr (the table still goes to stdout)")
    loudness.add_argument("-v", "--verbose", action="count", default=0,
                          help="more detail on stderr (logger names, debug messages, per-epoch "
                               "lines of tune, keras-tuner's tables and the backend's own lines)")
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text",
                        help="text: plain progress lines (default); json: one JSON object per "
                             "line (time, level, logger, message), errors included")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands")
    for command in COMMANDS:
        command.register(commands)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks remove temporary files."""


def _terminate(signum, frame):
    raise Terminated()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture)
        pass


def _say(args, text: str) -> None:
    """The final error or interruption line: plain on stderr, or a JSON log record."""
    if args.log_format == "json":
        logging.getLogger("melanoma.cli").error(text)
    else:
        print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # -v shows the backend's C++ lines (as TensorFlow's own default does)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    tfsetup.quiet_tensorflow_logs()
    logs.setup(-1 if args.quiet else args.verbose, args.log_format)
    if args.deterministic:
        backend.use_deterministic_mode()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.handler(args)
    except UserError as error:
        if args.debug:
            raise
        _say(args, f"melanoma-bench: error: {error}")
        return 2
    except BrokenPipeError:  # the reader left (`| head`): the rest of the output is unwanted
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a process killed by it
    except KeyboardInterrupt:
        _say(args, "melanoma-bench: interrupted (rerun the same command to resume)")
        return 130
    except Terminated:
        _say(args, "melanoma-bench: terminated (rerun the same command to resume)")
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
