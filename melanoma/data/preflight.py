"""Pre-flight scan of a data set before any training: what will be skipped, and why.

    melanoma-bench check ~/data/melanoma            # summary; exit 0 unless the layout is broken
    melanoma-bench check ~/data/melanoma --strict   # any warning is an error (exit 2)

Reads image headers only (PIL opens lazily), so a file whose header claims 10000x10000
pixels is refused without being decoded. Walks each class folder one level deep with
``os.scandir`` (no recursion, links not followed into folders), so symlink loops, nested
extra folders and non-UTF-8 names are counted, never crash.
"""
from __future__ import annotations

import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from melanoma.data.decode import MAX_PIXELS
from melanoma.data.layout import CLASS_NAMES, IMAGE_SUFFIXES, SPLITS, DataLayout, _child
from melanoma.util.errors import UserError
from melanoma.util.names import printable

MIN_SIDE = 32  # pixels; smaller images are upscaled many times and carry little signal
IMBALANCE_MIN_FRACTION = 0.1  # a class below this share of a split is flagged

WARNING_KINDS = ("unreadable", "non_image", "hidden", "nested_folders", "special_files", "tiny",
                 "huge", "duplicate_names", "imbalance")
# Reported, never an error: the generated set (and many public ones) reuse names across splits.
INFO_KINDS = ("names_in_both_splits",)


@dataclass
class PreflightReport:
    """Counts per problem kind, a few example files for each, and per-split class counts."""

    root: str
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, kind: str, name: str) -> None:
        self.counts[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 5:
            shown.append(name)

    @property
    def warnings(self) -> dict[str, int]:
        return {k: self.counts[k] for k in WARNING_KINDS if self.counts[k]}

    def summary(self) -> str:
        """One line: class counts per split, then each warning kind with its count."""
        splits = "; ".join(f"{s} " + " ".join(f"{c} {n}" for c, n in v.items())
                           for s, v in self.classes.items())
        found = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.warnings.items())
        return f"preflight: {splits}; " + (f"warnings: {found}" if found else "no warnings")

    def to_dict(self) -> dict:
        return {"classes": self.classes, "warnings": self.warnings,
                "info": {k: self.counts[k] for k in INFO_KINDS if self.counts[k]},
                "examples": {k: v for k, v in self.examples.items() if self.counts[k]}}


def header_problem(path: Path) -> str | None:
    """``unreadable``, ``tiny`` or ``huge`` from the file's header alone, or None when fine."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        return "huge"
    except Exception:  # noqa: BLE001 - any failure to read a header means "unreadable"
        return "unreadable"
    if width * height > MAX_PIXELS:
        return "huge"
    if min(width, height) < MIN_SIDE:
        return "tiny"
    return None


def _scan_class(folder: Path, split: str, report: PreflightReport, names: dict) -> int:
    """Scan one class folder; returns the number of usable-looking image files."""
    usable = 0
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: os.fsencode(e.name)):
            name = printable(Path(split) / folder.name / entry.name)
            if entry.name.startswith("."):
                report.add("hidden", name)
            elif _is_dir(entry):
                report.add("nested_folders", name)
            elif Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                report.add("non_image", name)
            else:
                names.setdefault(entry.name.lower(), set()).add((split, folder.name.lower()))
                problem = _file_type_problem(entry) or header_problem(Path(entry.path))
                if problem:
                    report.add(problem, name)
                if problem in (None, "tiny"):
                    usable += 1
    return usable


def _file_type_problem(entry: os.DirEntry) -> str | None:
    """``special_files`` for a FIFO, socket or device (opening a FIFO waits forever for a
    writer), ``unreadable`` for a broken link or a link loop; None for a regular file.
    Decided by stat alone, before anything is opened; layout.image_files skips the same."""
    try:
        mode = entry.stat().st_mode  # follows links
    except OSError:
        return "unreadable"
    return None if stat.S_ISREG(mode) else "special_files"


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # a link to a folder counts as a folder; never recursed into
    except OSError:
        return False


def scan(found: DataLayout) -> PreflightReport:
    """Scan the class folders of a discovered layout (header reads only)."""
    report = PreflightReport(printable(found.root))
    names: dict[str, set[tuple[str, str]]] = {}  # lower-case name -> {(split, class)}
    for split in SPLITS:
        split_dir = _child(found.root, split)
        counts = {}
        for class_name in CLASS_NAMES:
            counts[class_name] = _scan_class(_child(split_dir, class_name), split, report, names)
        report.classes[split] = counts
        total = sum(counts.values())
        for class_name, n in counts.items():
            if total and n / total < IMBALANCE_MIN_FRACTION:
                report.add("imbalance", f"{split}/{class_name}: {n} of {total}")
    for name, places in sorted(names.items()):
        where = ", ".join(f"{s}/{c}" for s, c in sorted(places))
        if len({c for _, c in places}) > 1:  # one name under both labels
            report.add("duplicate_names", f"{printable(name)} in {where}")
        elif len(places) > 1:
            report.add("names_in_both_splits", f"{printable(name)} in {where}")
    return report


def check(found: DataLayout, strict: bool = False) -> PreflightReport:
    """Scan, and with ``strict`` raise UserError when anything was flagged."""
    report = scan(found)
    empty = [f"{split}/{name.capitalize()}" for split, counts in report.classes.items()
             for name, n in counts.items() if n == 0]
    if empty:
        unreadable = report.warnings.get("unreadable", 0)
        raise UserError(f"data set {report.root}: {' and '.join(empty)} "
                        f"{'has' if len(empty) == 1 else 'have'} no readable image ("
                        f"{unreadable} unreadable file(s) in the data set); run `melanoma-bench "
                        f"check` for the files")
    if strict and report.warnings:
        raise UserError(f"--strict: data set {report.root} has problems ("
                        + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in
                                    report.warnings.items())
                        + "); run `melanoma-bench check` for the files")
    return report
