"""Build the public layout ``OUT/{train,val,test}/{Benign,Malignant}/`` from a ground-truth file.

Files are hard links to the source images where the file system allows (no extra space), copies
otherwise. ``OUT/manifest.csv`` lists every imported file with its source, split, label,
diagnosis, the line of the ground truth it came from and its lesion/patient id;
``OUT/import_summary.json`` holds the counts, the class mapping and the missing images.

An existing OUT is only written into when it is empty or holds a previous import (its
manifest.csv): then the previous split folders are replaced. Nothing outside OUT is deleted.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.importers.formats import FORMATS, read_labels
from melanoma.data.importers.grouping import assign_splits, groups_in_several_splits
from melanoma.data.importers.mapping import CLASSES, DEFAULT_MALIGNANT, class_mapping
from melanoma.data.layout import IMAGE_SUFFIXES
from melanoma.util import atomic
from melanoma.util.errors import UserError
from melanoma.util.names import confined

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("file", "source_file", "split", "label", "diagnosis", "label_source", "group_id")
SPLIT_DIRS = ("train", "val", "test")
PARTIAL = ".partial-import"


@dataclasses.dataclass
class ImportSummary:
    """What an import did; :meth:`describe` is the text the CLI prints."""

    out_dir: str
    formats: list[str]
    labels_files: list[str]
    mapping: str
    counts: dict[str, dict[str, int]]
    diagnoses: dict[str, int]
    excluded: dict[str, int]
    n_rows: int
    missing: list[str]
    n_linked: int
    n_copied: int
    grouped_by: list[str]
    groups_in_two_splits: list[str]
    test_source: str
    seed: int

    def describe(self) -> str:
        splits = " | ".join(f"{s}: {c['Benign']} Benign, {c['Malignant']} Malignant"
                            for s, c in self.counts.items())
        missing = (f"{len(self.missing)} ({', '.join(self.missing[:5])}"
                   f"{', ...' if len(self.missing) > 5 else ''})" if self.missing else "0")
        excluded = ", ".join(f"{d} {n}" for d, n in self.excluded.items()) or "none"
        groups = (f"grouped by {', '.join(self.grouped_by)}; {len(self.groups_in_two_splits)} in two splits"
                  if self.grouped_by else "no lesion/patient ids in the source: not grouped")
        return "\n".join([
            f"Imported {', '.join(self.formats)} ({', '.join(self.labels_files)}) into {self.out_dir}",
            f"Classes: {self.mapping}",
            f"{splits}",
            f"Rows {self.n_rows}; excluded by diagnosis: {excluded}; missing images: {missing}",
            f"Test set: {self.test_source}; {groups}; seed {self.seed}",
            (f"Files: {self.n_linked} hard links, {self.n_copied} copies; "
             f"manifest: {Path(self.out_dir) / 'manifest.csv'}"),
        ])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _as_list(paths) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def read_all(train_files: Sequence[Path], test_files: Sequence[Path],
             source_format: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The rows of several ground-truth files (same or different formats), each marked
    ``official_test`` or not, and the formats' names."""
    frames, names = [], []
    for f, is_test in [(f, False) for f in train_files] + [(f, True) for f in test_files]:
        rows, name = read_labels(f, source_format)
        rows["group_column"] = FORMATS[name].group or ""
        rows["official_test"] = is_test
        frames.append(rows)
        names.append(name)
    return pd.concat(frames, ignore_index=True), names


def index_images(folder: Path, skip: Path) -> dict[str, list[Path]]:
    """{file stem: [paths]} of the image files under ``folder`` (recursively; hidden entries
    and the folder ``skip`` left out)."""
    if not folder.is_dir():
        raise UserError(f"images folder {folder} does not exist or is not a folder")
    found: dict[str, list[Path]] = {}
    skip = skip.resolve()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() != skip)
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(p.stem, []).append(p)
    return found


def locate(ids: Sequence[str], folder: Path, out_dir: Path) -> list[Path | None]:
    """The image file of each id under ``folder`` (None when absent; two files is an error)."""
    index = index_images(folder, out_dir)
    twice = [i for i in ids if len(index.get(i, ())) > 1]
    if twice:
        paths = ", ".join(str(p) for p in index[twice[0]])
        raise UserError(f"image id {twice[0]} is found more than once under {folder}: {paths}")
    return [index[i][0] if i in index else None for i in ids]


def _is_manifest(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip() == ",".join(MANIFEST_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def check_out_dir(out: Path, image_dirs: Sequence[Path]) -> None:
    """Refuse an output folder that holds anything but a previous import, or that holds the
    source images."""
    out_r = out.resolve()
    for d in image_dirs:
        d_r = d.resolve()
        if d_r == out_r or out_r in d_r.parents:
            raise UserError(f"the images folder {d} lies inside the output folder {out}; "
                            "choose another output folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_manifest(out / "manifest.csv"):
        raise UserError(f"output folder {out} is not empty and holds no previous import "
                        "(manifest.csv written by import); choose a new or empty folder")


def _place(src: Path, dst: Path, link: bool) -> bool:
    """Hard-link (True) or, across file systems or when not allowed, copy (False)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError:
            pass
    shutil.copy2(src, dst)
    return False


def write_tree(rows: pd.DataFrame, out: Path, link: bool) -> tuple[int, int]:
    """Place every row's file under ``out/.partial-import``, then swap the split folders in."""
    partial = out / PARTIAL
    if partial.exists():
        shutil.rmtree(confined(partial, out))
    linked = 0
    for src, rel in zip(rows["source_file"], rows["file"]):
        linked += _place(Path(src), partial / rel, link)
    for name in SPLIT_DIRS:
        if (out / name).exists():
            shutil.rmtree(confined(out / name, out))
    for name in SPLIT_DIRS:
        if (partial / name).exists():
            (partial / name).rename(out / name)
    shutil.rmtree(confined(partial, out))
    return linked, len(rows) - linked


def _counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {s: {c: int(((rows["split"] == s) & (rows["label"] == c)).sum()) for c in CLASSES}
            for s in SPLIT_DIRS if (rows["split"] == s).any()}


def _ids_once(rows: pd.DataFrame) -> None:
    dup = rows["image_id"].duplicated(keep=False)
    if dup.any():
        first = rows.loc[dup, "image_id"].iloc[0]
        where = ", ".join(rows.loc[rows["image_id"] == first, "label_source"])
        raise UserError(f"image id {first} is listed more than once ({where}); "
                        f"{rows.loc[dup, 'image_id'].nunique()} ids are")


def _find_files(rows: pd.DataFrame, images_dir: Path, test_dir: Path, out: Path) -> pd.DataFrame:
    """Add source_file (None when missing); all missing is an error."""
    src = pd.Series([None] * len(rows), index=rows.index, dtype=object)
    for folder, part in ((images_dir, ~rows["official_test"]), (test_dir, rows["official_test"])):
        if part.any():
            src[part] = locate(rows.loc[part, "image_id"].tolist(), folder, out)
    rows = rows.assign(source_file=src)
    if rows["source_file"].isna().all():
        raise UserError(f"none of the {len(rows)} images listed was found under {images_dir}"
                        f"{'' if test_dir == images_dir else ' or ' + str(test_dir)} "
                        f"(e.g. {rows['image_id'].iloc[0]}.jpg); is it the right folder?")
    return rows


def _splits(kept: pd.DataFrame, y, official: bool, test_fraction: float, val_fraction: float,
            seed: int):
    try:
        return assign_splits(y, kept["group_id"].to_numpy(object),
                             official_test=kept["official_test"].to_numpy() if official else None,
                             test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    except ValueError as error:  # e.g. too few images of a class for a stratified split
        raise UserError(f"cannot split the {len(kept)} found images into train/test/val: "
                        f"{error}") from None


def import_dataset(source_format: str | None, labels_csv, images_dir, out_dir, *,
                   test_labels_csv=None, test_images_dir=None,
                   malignant: Sequence[str] = DEFAULT_MALIGNANT, exclude: Sequence[str] | None = None,
                   test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0,
                   link: bool = True) -> ImportSummary:
    """Import a data set from its own ground truth into the public layout under ``out_dir``.

    ``labels_csv`` (one file or several, e.g. ISIC 2017's training and validation files) and
    ``test_labels_csv`` (the official test set, kept as test) in one of
    :data:`~melanoma.data.importers.formats.FORMATS` (``source_format`` None or 'auto': from
    the header); images are looked up by id under ``images_dir`` / ``test_images_dir``
    (recursively). Without an official test set ``test_fraction`` is held out; ``val_fraction``
    of the rest becomes ``val/``; both stratified, seeded and grouped by lesion/patient id.
    ``malignant`` / ``exclude``: the class mapping (:func:`~.mapping.class_mapping`).
    """
    mapping = class_mapping(malignant, exclude)
    out = Path(out_dir)
    images_dir = Path(images_dir)
    test_dir = Path(test_images_dir) if test_images_dir is not None else images_dir
    check_out_dir(out, [images_dir, test_dir])
    train_files, test_files = _as_list(labels_csv), _as_list(test_labels_csv)
    if not train_files:
        raise UserError("no labels file given")
    rows, formats = read_all(train_files, test_files, source_format)
    _ids_once(rows)
    rows["label"] = [mapping.label(d) for d in rows["diagnosis"]]
    excluded = rows.loc[rows["label"].isna(), "diagnosis"].value_counts().sort_index()
    if rows["label"].isna().all():
        raise UserError(f"every row is excluded by the class mapping ({mapping.describe(rows['diagnosis'].unique())})")
    kept = _find_files(rows[rows["label"].notna()], images_dir, test_dir, out)
    missing = sorted(kept.loc[kept["source_file"].isna(), "image_id"])
    kept = kept[kept["source_file"].notna()].reset_index(drop=True)
    y = (kept["label"] == "Malignant").to_numpy(np.int64)
    kept["split"] = _splits(kept, y, bool(test_files), test_fraction, val_fraction, seed)
    kept["file"] = [f"{s}/{lab}/{Path(p).name}" for s, lab, p in zip(kept["split"], kept["label"], kept["source_file"])]
    kept["source_file"] = [str(Path(p).resolve()) for p in kept["source_file"]]
    kept = kept.sort_values(["split", "label", "file"]).reset_index(drop=True)
    atomic.make_folder(out)  # a file, a read-only or unreachable place: one line, now
    with atomic.place_errors(out, "write the import into"):
        n_linked, n_copied = write_tree(kept, out, link)
    summary = ImportSummary(
        out_dir=str(out), formats=sorted(set(formats)), labels_files=[f.name for f in train_files + test_files],
        mapping=mapping.describe(rows["diagnosis"].unique()), counts=_counts(kept),
        diagnoses={d: int(n) for d, n in kept["diagnosis"].value_counts().sort_index().items()},
        excluded={d: int(n) for d, n in excluded.items()}, n_rows=len(rows), missing=missing,
        n_linked=n_linked, n_copied=n_copied, grouped_by=sorted({g for g in kept["group_column"] if g}),
        groups_in_two_splits=groups_in_several_splits(kept["split"].to_numpy(), kept["group_id"].to_numpy()),
        test_source="official" if test_files else (f"held out ({test_fraction:g})" if test_fraction else "none"),
        seed=seed)
    with atomic.atomic_open(out / "manifest.csv", "w", encoding="utf-8", newline="") as fh:
        kept[list(MANIFEST_COLUMNS)].to_csv(fh, index=False)
    atomic.write_json(out / "import_summary.json", summary.to_dict())
    if missing:
        log.warning("%d listed images were not found (skipped), e.g. %s", len(missing), missing[0])
    return summary
