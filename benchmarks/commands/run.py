"""``melanoma-bench run``: train or load every configured variant and write the report."""
from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.toml"


def register(commands) -> None:
    parser = commands.add_parser("run", help="train or load each variant and write the report")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="TOML or YAML config (default: the CPU smoke config)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="root with train/ and test/ (default: generated synthetic data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: reports/<config name>)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"),
                        help="where trained models are cached (default: models/)")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME",
                        help="run only this variant of the config (repeatable)")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even when a model with the same config exists")
    parser.add_argument("--strict", action="store_true",
                        help="treat data pre-flight warnings (unreadable, tiny, huge, hidden, "
                             "non-image files, ...) as errors (exit 2)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma import config
    from melanoma.report import markdown_table

    from ..run import run_benchmark

    cfg = config.select_variants(config.load(args.config), args.variant)
    rows = run_benchmark(cfg, data_dir=args.data_dir, out_dir=args.out,
                         models_dir=args.models_dir, retrain=args.retrain, strict=args.strict)
    print(markdown_table(rows))
    return 0
