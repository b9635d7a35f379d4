"""melanoma-bench tune: search the head with keras-tuner (resumable, distributable)."""
from __future__ import annotations

from pathlib import Path

from melanoma.cli import options


def register(commands) -> None:
    parser = options.add_command(
        commands, "tune", "Search head units, dropout and learning rate with keras-tuner "
                          "(resumable).",
        ("melanoma-bench tune",
         "melanoma-bench tune --isolate --out reports/tune",
         "melanoma-bench tune --role chief --oracle 127.0.0.1:8000"))
    options.add_config(parser, default="tune")  # a config with a [tune] table
    options.add_data_dir(parser)
    options.add_limit(parser)
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
        code = subprocess.run([sys.executable, "-m", "melanoma.cli.main", *argv, *extra,
                               "--trials-per-process", "1"]).returncode
        if code != MORE_TRIALS:
            return code


def main(args) -> int:
    from melanoma.util.errors import UserError

    if args.trials_per_process is not None and args.trials_per_process < 1:
        raise UserError("--trials-per-process must be at least 1")
    if args.isolate:
        if args.role == "worker" and args.worker_id is None:  # one id for all the children
            import os
            import socket

            args.worker_id = f"tuner-{socket.gethostname()}-{os.getpid()}"
        argv = ["tune", "--config", str(args.config), "--connect-timeout",
                str(args.connect_timeout)]
        for item in args.overrides:
            argv += ["--set", item]
        for flag, value in (("--seed", args.seed), ("--limit", args.limit)):
            argv += [flag, str(value)] if value is not None else []
        for flag, value in (("--data-dir", args.data_dir), ("--out", args.out),
                            ("--role", args.role), ("--oracle", args.oracle),
                            ("--worker-id", args.worker_id)):
            argv += [flag, str(value)] if value is not None else []
        options.check_data_dir(args, options.config_from(args))  # fails here, not in a child
        return isolated(argv, args.restart)
    cfg = options.config_from(args)
    if args.role != "chief":  # the chief never reads the data
        options.check_data_dir(args, cfg)
    from melanoma.tuning.search import run_tuning

    results = run_tuning(cfg, data_dir=args.data_dir, out_dir=args.out,
                         restart=args.restart, role=args.role, oracle=args.oracle,
                         worker_id=args.worker_id, connect_timeout=args.connect_timeout,
                         trials_per_process=args.trials_per_process)
    if results is not None and results.get("more"):
        return MORE_TRIALS
    if results is not None:
        from tabulate import tabulate

        shown = [{k: v for k, v in row.items() if k != "trial_id"} for row in results["rows"]]
        print(tabulate(shown, headers="keys", tablefmt="github", floatfmt=".4g"))
        if results["best"] is not None:
            print(f"best: trial {results['best']['trial']}  val_auc="
                  f"{results['best']['val_auc']:.4f}  {results['best']['hyperparameters']}")
    return 0
