"""``melanoma-bench audit DATA_DIR``: exact and near-duplicate images within and across
train/val/test (the dermoscopy detector, docs/duplicate_audit.md), and images of one lesion
or patient in two splits when DATA_DIR holds an importer's manifest.csv; with the same file
discovery and train/val split as ``run``.

    melanoma-bench audit --data-dir ~/data/melanoma --out reports/audit
"""
from __future__ import annotations

import json
from pathlib import Path

from melanoma.cli import options


def register(commands) -> None:
    parser = options.add_command(
        commands, "audit", "Find duplicate images (and one lesion in two splits) across "
                           "train/val/test.",
        ("melanoma-bench audit --data-dir ~/data/melanoma --out reports/audit",
         "melanoma-bench audit ~/data/melanoma --include-flips"))
    options.add_data_dir(parser, required=True, positional=True,
                         help_text="root with train/ and test/ (the public layout)")
    parser.add_argument("--out", type=Path, default=Path("reports/audit"),
                        help="output folder (default: reports/audit)")
    options.add_config(parser)  # its data.val_fraction and seed define the val split
    parser.add_argument("--min-corr", type=float, default=None,
                        help="band-pass correlation that makes a pair a duplicate (default: the "
                             "config's evaluation.audit_min_corr, 0.95)")
    parser.add_argument("--include-flips", action="store_true", default=None,
                        help="also match flipped and 90-degree rotated copies (default: the "
                             "config's evaluation.audit_include_flips, false)")
    parser.set_defaults(handler=main)


def audit_data_dir(data_dir: Path, out: Path, val_fraction: float, seed: int,
                   min_corr: float = 0.95, include_flips: bool = False) -> dict:
    """The run's split of a data folder, audited: audit_pairs.csv/.png, audit_summary.json."""
    from melanoma.data import layout
    from melanoma.evaluation import audit
    from melanoma.reporting.audit_figures import run_audit

    found = layout.discover(data_dir)
    layout.refuse_inside_data(found.root, {"--out": out})
    items, sig = audit.items_from_layout(found, val_fraction, seed)
    return run_audit(items, out, min_corr, include_flips=include_flips, signatures=sig,
                     groups=audit.groups_for(items, found.root))[1]


def main(args) -> int:
    from melanoma.util.errors import UserError

    cfg = options.config_from(args)
    min_corr = cfg.evaluation.audit_min_corr if args.min_corr is None else args.min_corr
    if not 0 < min_corr <= 1:
        raise UserError(f"--min-corr must be in (0, 1], got {min_corr}")
    flips = cfg.evaluation.audit_include_flips if args.include_flips is None else True
    summary = audit_data_dir(options.data_dir_from(args, required=True), args.out,
                             cfg.data.val_fraction, cfg.seed, min_corr, flips)
    keys = ("n_by_split", "n_test", "test_with_duplicate_in_train",
            "test_with_exact_duplicate_in_train", "test_with_duplicate_in_val",
            "test_with_same_lesion_in_train_or_val", "test_fraction_affected", "n_test_clean",
            "pairs_total", "label_conflict_pairs", "n_unreadable")
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    print(f"wrote {args.out}/audit_pairs.csv, audit_pairs.png, audit_summary.json")
    return 0
