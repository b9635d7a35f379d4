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
    parser.add_argument("--trials-per-process", type=int, default=None, metavar="N",
                        help="stop after N trials (exit status 75 while trials remain; "
                             "rerun to continue)")
    parser.add_argument("--isolate", action="store_true",
                        help="run each trial in a fresh child process, so memory stays flat "
                             "(TensorFlow keeps ~300 MB per traced model in a process)")
    parser.set_defaults(handler=main)


MORE_TRIALS = 75  # EX_TEMPFAIL: this process stopped, the search is not finished


def isolated(argv: list[str], restart: bool) -> int:
    """Rerun this command with --trials-per-process 1 until the search is finished
    (``--restart`` goes to the first child only; the others resume)."""
    import subprocess
    import sys

    first = True
    while True:
        extra = ["--restart"] if restart and first else []
        first = False
        code = subprocess.run([sys.executable, "-m", "benchmarks.cli", *argv, *extra,
                               "--trials-per-process", "1"]).returncode
        if code != MORE_TRIALS:
            return code


def main(args) -> int:
    from melanoma import config
    from melanoma.errors import UserError

    from ..tune import run_tuning

    if args.trials_per_process is not None and args.trials_per_process < 1:
        raise UserError("--trials-per-process must be at least 1")
    if args.isolate:
        if args.role == "worker" and args.worker_id is None:  # one id for all the children
            import os
            import socket

            args.worker_id = f"tuner-{socket.gethostname()}-{os.getpid()}"
        argv = ["tune", "--config", str(args.config), "--connect-timeout",
                str(args.connect_timeout)]
        for flag, value in (("--data-dir", args.data_dir), ("--out", args.out),
                            ("--role", args.role), ("--oracle", args.oracle),
                            ("--worker-id", args.worker_id)):
            argv += [flag, str(value)] if value is not None else []
        config.load(args.config)  # a bad config fails here, once, not in a child
        return isolated(argv, args.restart)
    results = run_tuning(config.load(args.config), data_dir=args.data_dir, out_dir=args.out,
                         restart=args.restart, role=args.role, oracle=args.oracle,
                         worker_id=args.worker_id, connect_timeout=args.connect_timeout,
                         trials_per_process=args.trials_per_process)
    if results is not None and results.get("more"):
        return MORE_TRIALS
    if results is not None:
        from tabulate import tabulate

        print(tabulate(results["rows"], headers="keys", tablefmt="github", floatfmt=".4g"))
        if results["best"] is not None:
            print(f"best: trial {results['best']['trial']}  val_auc="
                  f"{results['best']['val_auc']:.4f}  {results['best']['hyperparameters']}")
    return 0
