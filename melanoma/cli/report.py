"""``melanoma-bench report RUN_DIR``: rebuild every table, figure and index.html of a run
from its saved predictions and results alone (no model, no TensorFlow).

    melanoma-bench report reports/default            # in place
    melanoma-bench report reports/default --out /tmp/copy
"""
from __future__ import annotations

from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("report", help="rebuild tables, plots and index.html of a run")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="output folder of `melanoma-bench run`")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the rebuilt report here (default: RUN_DIR itself)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma.reporting.tables import markdown_table, rebuild

    rows = rebuild(args.run_dir, args.out)
    print(markdown_table(rows))
    return 0
