"""``melanoma-bench report RUN_DIR``: rebuild every table, figure and index.html of a run
from its saved predictions and results alone (no model, no TensorFlow).

    melanoma-bench report reports/default            # in place
    melanoma-bench report reports/default --out /tmp/copy
    melanoma-bench report reports/default --wide     # print every column
"""
from __future__ import annotations

from pathlib import Path

from melanoma.cli import options


def register(commands) -> None:
    parser = commands.add_parser("report", help="rebuild tables, plots and index.html of a run")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="output folder of `melanoma-bench run`")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the rebuilt report here (default: RUN_DIR itself)")
    options.add_wide(parser)
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma.reporting.tables import rebuild

    rows = rebuild(args.run_dir, args.out)
    options.print_table(rows, args.wide)
    return 0
