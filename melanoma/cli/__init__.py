"""One module per ``melanoma-bench`` subcommand; each has ``register(subparsers)``.

A subcommand parses its arguments, builds a config and calls a library function: the
same work is equally usable from Python or a notebook.
"""
from melanoma.cli import audit, bench, check, evaluate, import_data, prepare, report, run, tune

COMMANDS = (run, prepare, check, evaluate, audit, import_data, report, tune, bench)
