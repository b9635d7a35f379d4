"""``melanoma-bench check DATA_DIR``: the data pre-flight scan alone (headers only, seconds).

    melanoma-bench check ~/data/melanoma
    melanoma-bench check ~/data/melanoma --strict     # exit 2 when anything is flagged
"""
from __future__ import annotations

import json
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("check", help="scan a data set for problems before training")
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR",
                        help="root with train/ and test/")
    parser.add_argument("--strict", action="store_true", help="any warning is an error (exit 2)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma import layout, preflight

    report = preflight.check(layout.discover(args.data_dir), args.strict)
    print(report.summary())
    print(json.dumps(report.to_dict(), indent=2))
    return 0
