"""``melanoma-bench audit DATA_DIR``: exact and near-duplicate images within and across
train/val/test, with the same file discovery and train/val split as ``run``.

    melanoma-bench audit --data-dir ~/data/melanoma --out reports/audit
"""
from __future__ import annotations

import json
from pathlib import Path

from melanoma.cli import options


def register(commands) -> None:
    parser = commands.add_parser("audit", help="find duplicate images across train/val/test")
    options.add_data_dir(parser, required=True, positional=True,
                         help_text="root with train/ and test/ (the public layout)")
    parser.add_argument("--out", type=Path, default=Path("reports/audit"),
                        help="output folder (default: reports/audit)")
    options.add_config(parser)  # its data.val_fraction and seed define the val split
    parser.add_argument("--max-distance", type=int, default=None,
                        help="Hamming bits of the 16x16 average hash (default: the config's, 12)")
    parser.add_argument("--include-flips", action="store_true",
                        help="also count mirrored copies (left-right, top-bottom, both)")
    parser.set_defaults(handler=main)


def audit_data_dir(data_dir: Path, out: Path, val_fraction: float, seed: int,
                   max_distance: int = 12, include_flips: bool = False) -> dict:
    """The run's split of a data folder, audited: audit_pairs.csv/.png, audit_summary.json."""
    from melanoma.data import layout
    from melanoma.evaluation import audit

    items, table = audit.items_from_layout(layout.discover(data_dir), val_fraction, seed,
                                           include_flips=include_flips)
    return audit.run_audit(items, out, max_distance, include_flips=include_flips, table=table)[1]


def main(args) -> int:
    from melanoma.util.errors import UserError

    cfg = options.config_from(args)
    distance = cfg.evaluation.audit_max_distance if args.max_distance is None else args.max_distance
    if not 0 <= distance < 256:
        raise UserError(f"--max-distance must be in [0, 256), got {distance}")
    summary = audit_data_dir(options.data_dir_from(args, required=True), args.out,
                             cfg.data.val_fraction, cfg.seed, distance, args.include_flips)
    keys = ("n_by_split", "n_test", "test_with_duplicate_in_train",
            "test_with_exact_duplicate_in_train", "test_with_duplicate_in_val",
            "test_fraction_affected", "n_test_clean", "pairs_total", "label_conflict_pairs",
            "n_unreadable")
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    print(f"wrote {args.out}/audit_pairs.csv, audit_pairs.png, audit_summary.json")
    return 0
