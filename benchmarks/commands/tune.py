"""``melanoma-bench tune``: search the head with keras-tuner (resumable, distributable)."""
from __future__ import annotations

from pathlib import Path

from .run import DEFAULT_CONFIG as RUN_DEFAULT_CONFIG

DEFAULT_CONFIG = RUN_DEFAULT_CONFIG.parent / "tune.toml"


def register(commands) -> None:
    parser = commands.add_parser("tune", help="search head units, dropout and learning rate")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="TOML or YAML config with a [tune] table (default: the CPU "
                             "smoke tuning config)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="root with train/ and test/ (default: generated synthetic data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: reports/tune-<config name>)")
    parser.add_argument("--restart", action="store_true",
                        help="delete the previous search under --out and start over "
                             "(default: resume it)")
    parser.add_argument("--role", choices=("chief", "worker"), default=None,
                        help="distributed tuning: the chief runs the oracle, workers train")
    parser.add_argument("--oracle", default=None, metavar="HOST:PORT",
                        help="the chief's address (both roles)")
    parser.add_argument("--worker-id", default=None,
                        help="a stable worker name (e.g. tuner0): a restarted worker then "
                             "resumes its unfinished trial")
    parser.add_argument("--connect-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long a worker waits for the chief (default 300)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma import config

    from ..tune import run_tuning

    results = run_tuning(config.load(args.config), data_dir=args.data_dir, out_dir=args.out,
                         restart=args.restart, role=args.role, oracle=args.oracle,
                         worker_id=args.worker_id, connect_timeout=args.connect_timeout)
    if results is not None:
        from tabulate import tabulate

        print(tabulate(results["rows"], headers="keys", tablefmt="github", floatfmt=".4g"))
        if results["best"] is not None:
            print(f"best: trial {results['best']['trial']}  val_auc="
                  f"{results['best']['val_auc']:.4f}  {results['best']['hyperparameters']}")
    return 0
