"""``melanoma-bench check --data-dir DIR``: the data pre-flight scan alone (headers only).

    melanoma-bench check --data-dir ~/data/melanoma
    melanoma-bench check ~/data/melanoma --strict     # exit 2 when anything is flagged
"""
from __future__ import annotations

import json

from melanoma.cli import options


def register(commands) -> None:
    parser = options.add_command(
        commands, "check", "Scan a data set for problems before training (headers only).",
        ("melanoma-bench check --data-dir ~/data/melanoma",
         "melanoma-bench check ~/data/melanoma --strict"))
    options.add_data_dir(parser, required=True, positional=True, help_text="root with train/ and test/")
    parser.add_argument("--strict", action="store_true", help="any warning is an error (exit 2)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma.data import layout, preflight

    report = preflight.check(layout.discover(options.data_dir_from(args, required=True)), args.strict)
    print(report.summary())
    print(json.dumps(report.to_dict(), indent=2))
    return 0
