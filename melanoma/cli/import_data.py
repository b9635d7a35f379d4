"""``melanoma-bench import``: a public data set's own ground truth and image folder -> the
train/test layout every other command reads, with manifest.csv (source file, label source,
lesion/patient id, split) and hard links where possible.

    melanoma-bench import --labels HAM10000_metadata.csv --images HAM10000_images/ --out data/ham
    melanoma-bench import --labels ISIC-2017_Training_Part3_GroundTruth.csv \\
        --labels ISIC-2017_Validation_Part3_GroundTruth.csv --images isic2017_images/ \\
        --test-labels ISIC-2017_Test_v2_Part3_GroundTruth.csv --out data/isic2017
"""
from __future__ import annotations

from pathlib import Path

from melanoma.cli import options

FORMAT_NAMES = ("auto", "isic2016", "isic2017", "isic2018", "isic2019", "isic2020", "ham10000")


def register(commands) -> None:
    parser = options.add_command(
        commands, "import", "Build the train/test layout from ISIC 2016-2020 or HAM10000 "
                            "ground-truth files.",
        ("melanoma-bench import --labels HAM10000_metadata.csv --images HAM10000_images/ "
         "--out data/ham",
         "melanoma-bench import --labels ISIC-2017_Training_Part3_GroundTruth.csv "
         "--images isic2017_images/ --test-labels ISIC-2017_Test_v2_Part3_GroundTruth.csv "
         "--out data/isic2017"))
    parser.add_argument("--labels", action="append", type=Path, required=True, metavar="CSV",
                        help="ground-truth CSV (repeatable: e.g. ISIC 2017 train and validation)")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="folder holding the images (searched recursively by image id)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (new, empty, or a previous import)")
    parser.add_argument("--format", default="auto", choices=FORMAT_NAMES,
                        help="format of the labels files (default: detected from the header)")
    parser.add_argument("--test-labels", action="append", type=Path, default=None, metavar="CSV",
                        help="an official test set's ground truth, kept as test (repeatable)")
    parser.add_argument("--test-images", type=Path, default=None, metavar="DIR",
                        help="folder of the test images (default: --images)")
    parser.add_argument("--malignant", nargs="+", action="extend", default=None, metavar="DX",
                        help="diagnoses that are Malignant (default: melanoma), e.g. "
                             "--malignant melanoma bcc akiec scc")
    parser.add_argument("--exclude", nargs="*", action="extend", default=None, metavar="DX",
                        help="diagnoses left out (default: akiec bcc scc unknown, less any named "
                             "malignant; --exclude with no name: none, the rest is Benign)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="held-out test share when no --test-labels is given (default 0.2)")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="share of the training images put in val/ (default 0: run splits "
                             "train/ itself)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--copy", action="store_true", help="copy the images (no hard links)")
    parser.set_defaults(handler=main)


def main(args) -> int:
    from melanoma.data.importers import import_dataset
    from melanoma.util.errors import UserError

    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    summary = import_dataset(
        args.format, args.labels, args.images, args.out,
        test_labels_csv=args.test_labels, test_images_dir=args.test_images,
        malignant=args.malignant or ("melanoma",),
        exclude=None if args.exclude is None else tuple(args.exclude),  # `--exclude` alone: none
        test_fraction=args.test_fraction, val_fraction=args.val_fraction, seed=args.seed,
        link=not args.copy)
    print(summary.describe())
    return 0
