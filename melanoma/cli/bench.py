"""``melanoma-bench bench``: train the fixed regression config's seeds and judge them against
its seed baseline (``evaluation.gate``: flags only what seed spread cannot explain).

    melanoma-bench bench                          # retrain bench.toml, compare, exit 1 on regression
    melanoma-bench bench --update-baseline        # write benchmarks/baselines/bench.json on purpose
    melanoma-bench bench --set defaults.learning_rate=1e-6   # a changed setting, same baseline
    melanoma-bench bench --predictions reports/bench/predictions.csv   # compare saved results only
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from melanoma.cli import options

BASELINES = Path("benchmarks") / "baselines"  # in the checkout: baselines are not package data


def register(commands) -> None:
    parser = options.add_command(
        commands, "bench", "Retrain the regression config's seeds and compare them with the "
                           "committed baseline.",
        ("melanoma-bench bench",
         "melanoma-bench bench --set defaults.learning_rate=1e-6",
         "melanoma-bench bench --predictions reports/bench/predictions.csv"))
    options.add_config(parser, default="bench")
    options.add_data_dir(parser)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="baseline JSON (default: benchmarks/baselines/<config name>.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: reports/<config name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a report of another config or data set in --out")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="compare this predictions.csv instead of training (no model needed)")
    parser.add_argument("--update-baseline", action="store_true",
                        help="write the baseline from this run (records date and git commit)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma import config
    from melanoma.reporting.saved import read_predictions
    from melanoma.runs import regression
    from melanoma.util.errors import UserError

    cfg = options.config_from(args)
    config_path = config.resolve(args.config)
    baseline_path = args.baseline or BASELINES / f"{cfg.name}.json"
    if args.predictions is not None:
        if not args.predictions.is_file():
            raise UserError(f"no predictions file {args.predictions}")
        predictions = read_predictions(args.predictions)
        run_dir = args.predictions.parent  # its results.json, if any, says the training data
    else:
        run_dir = Path(args.out or Path("reports") / cfg.name)
        options.check_data_dir(args, cfg)
        predictions = run_bench_config(cfg, run_dir, args.data_dir, args.overwrite)
    train_fingerprint = regression.run_train_fingerprint(run_dir / "results.json")
    if args.update_baseline:
        baseline = regression.make_baseline(predictions, config_path, cfg.overrides,
                                            train_fingerprint=train_fingerprint)
        regression.write_baseline(baseline_path, baseline)
        print(f"wrote {baseline_path} (commit {baseline['git']['commit'][:12]}"
              f"{', dirty tree' if baseline['git'].get('dirty') else ''}, {baseline['created']})")
        if train_fingerprint is None:
            print(f"bench: no training-data fingerprint recorded ({run_dir / 'results.json'} "
                  f"has none): later runs' training data cannot be compared", file=sys.stderr)
        return 0
    if not baseline_path.is_file():
        raise UserError(f"no baseline {baseline_path}; create it with "
                        f"`melanoma-bench bench --update-baseline`")
    outcome = regression.check_predictions(predictions, regression.read_baseline(baseline_path),
                                           config_path, cfg.overrides, train_fingerprint)
    print(f"baseline: {baseline_path}")
    print(outcome.report())
    return 0 if outcome.passed else 1


def run_bench_config(cfg, out_dir: Path | None, data_dir: Path | None = None,
                     overwrite: bool = False):
    """Always retrain (into a throw-away models folder): the point is to test the code."""
    from melanoma.reporting.saved import read_predictions
    from melanoma.runs.benchmark import run_benchmark

    out_dir = Path(out_dir or Path("reports") / cfg.name)
    with tempfile.TemporaryDirectory(prefix="melanoma-bench-") as models:
        run_benchmark(cfg, data_dir=data_dir, out_dir=out_dir, models_dir=Path(models),
                      retrain=True, overwrite=overwrite)
    print(f"bench: predictions in {out_dir / 'predictions.csv'}", file=sys.stderr)
    return read_predictions(out_dir / "predictions.csv")
