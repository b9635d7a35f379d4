"""``melanoma-bench perf``: the performance suite (P1-P4, GPU figures when a GPU is visible).

    melanoma-bench perf                     # writes reports/perf/perf.{md,json}
    melanoma-bench perf --skip-main-job     # without P4 (the ~4 min default main job)

Exit status 0 when every measured target holds, 1 when one is missed.
"""
from __future__ import annotations

from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("perf", help="performance suite: ratios measured side by side")
    parser.add_argument("--out", type=Path, default=Path("reports/perf"),
                        help="report folder (default: reports/perf)")
    parser.add_argument("--skip-main-job", action="store_true",
                        help="skip P4 (runs the default main job, about 4 min on 2 cores)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma.errors import UserError

    try:
        import tf_keras  # noqa: F401 - P1's baseline is the original ImageDataGenerator
    except ImportError:
        raise UserError("P1 compares with tf_keras' ImageDataGenerator: "
                        "pip install -e '.[perf]' (or `tox -e perf`)") from None
    from .. import perf

    figures = perf.run_perf(args.out, main_job=not args.skip_main_job)
    print((args.out / "perf.md").read_text(encoding="utf-8"))
    return 1 if any(f.holds is False for f in figures) else 0
