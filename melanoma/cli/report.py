"""``melanoma-bench report RUN_DIR``: rebuild every table, figure and index.html of a run
from its saved predictions and results alone (no TensorFlow unless a saved model is found
for the Grad-CAM overlays of the error galleries).

    melanoma-bench report reports/default            # in place
    melanoma-bench report reports/default --out /tmp/copy
    melanoma-bench report reports/default --wide     # print every column
    melanoma-bench report reports/default --ensemble ens=efficient_net_b0_samplewise+efficient_net_b0_native
    melanoma-bench report reports/default --models-dir models --data-dir ~/data/melanoma
"""
from __future__ import annotations

from pathlib import Path

from melanoma.cli import options


def register(commands) -> None:
    parser = options.add_command(
        commands, "report", "Rebuild a run's tables, figures and index.html from its saved "
                            "predictions.",
        ("melanoma-bench report reports/default",
         "melanoma-bench report reports/default --out reports/rebuilt --ensemble "
         "pair=efficient_net_b0_samplewise+efficient_net_b0_native"))
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="the output folder of a run")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the rebuilt report here (default: RUN_DIR itself)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a report of another experiment in --out (default: refuse)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the run's images are now, for the error galleries "
                             "(default: the data folder the run recorded)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="saved models (run's --models-dir) for Grad-CAM on the gallery "
                             "images (default: the folder the run recorded, if any)")
    parser.add_argument("--gallery-cases", type=int, default=None, metavar="K",
                        help="gallery images per variant and kind (default: the config's "
                             "report.gallery_cases, 6; 0: no galleries)")
    parser.add_argument("--ensemble", action="append", default=[],
                        metavar="NAME=A+B[:geometric]",
                        help="add an ensemble row: the mean (or geometric mean) of the saved "
                             "predictions of variants A, B, ... (repeatable)")
    options.add_wide(parser)
    parser.set_defaults(handler=main)


def parse_ensemble(text: str) -> dict:
    """``name=a+b[:method]`` -> {"name", "members", "method"} (checked with the config's
    rules when the report is built)."""
    from melanoma.util.errors import UserError

    name, sep, rest = text.partition("=")
    members, _, method = rest.partition(":")
    if not sep or not name or "+" not in members:
        raise UserError(f"--ensemble {text!r}: write NAME=VARIANT+VARIANT[+...][:mean|:geometric]")
    return {"name": name, "members": members.split("+"), "method": method or "mean"}


def refuse_out_inside_data(run_dir: Path, out: Path, data_dir: Path | None) -> None:
    """--out inside the run's data (--data-dir, or the root its results.json records)."""
    import json

    from melanoma.data import layout

    roots = [data_dir]
    try:
        saved = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
        roots.append(((saved.get("provenance") or {}).get("data") or {}).get("root"))
    except (OSError, ValueError, AttributeError):
        pass  # the report's own reading names a damaged results.json
    for root in roots:
        if isinstance(root, (str, Path)) and Path(root).is_dir():
            layout.refuse_inside_data(root, {"--out": out})


def main(args) -> int:
    from melanoma.reporting.extras import ReportOptions
    from melanoma.reporting.run_report import rebuild
    from melanoma.util.errors import UserError

    if args.gallery_cases is not None and args.gallery_cases < 0:
        raise UserError(f"--gallery-cases must be >= 0, got {args.gallery_cases}")
    report_options = ReportOptions(
        data_root=args.data_dir, models_dir=args.models_dir, gallery_cases=args.gallery_cases,
        ensembles=tuple(parse_ensemble(e) for e in args.ensemble))
    if args.out is not None:
        refuse_out_inside_data(args.run_dir, args.out, args.data_dir)
    rows = rebuild(args.run_dir, args.out, report_options, args.overwrite)
    options.print_table(rows, args.wide)
    return 0
