"""Audit items (path, split, label), the pairs table's columns, file checks and the lesion or
patient groups an importer's ``manifest.csv`` records."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}
LABEL_NAMES = {0: "benign", 1: "malignant"}
KINDS = ("exact", "near", "same_lesion")

# Column order of the pairs table. bandpass_corr and ssim are the detector's similarity after
# alignment (1.0 for identical pixels; empty for a same_lesion pair the detector did not flag);
# transform maps file_a onto file_b; group is the lesion/patient id both share ('' if none).
PAIR_COLUMNS = (
    "file_a", "split_a", "label_a",
    "file_b", "split_b", "label_b",
    "kind", "bandpass_corr", "ssim", "cross_split", "label_conflict", "transform", "group",
)
_DTYPES = {
    "file_a": str, "split_a": str, "label_a": "int64",
    "file_b": str, "split_b": str, "label_b": "int64",
    "kind": str, "bandpass_corr": "float64", "ssim": "float64", "cross_split": bool,
    "label_conflict": bool, "transform": str, "group": str,
}
# Errors PIL raises for files that are not (complete) images.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class AuditItem:
    """One image of the data set (same shape as the data module's ImageRecord)."""

    path: pathlib.Path
    split: str  # 'train' | 'val' | 'test'
    label: int  # 0 benign, 1 malignant


def content_hash(path: str | os.PathLike) -> str | None:
    """SHA-256 hex digest of the file bytes (exact duplicates); None if unreadable."""
    try:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def is_readable(path: str | os.PathLike) -> bool:
    """Whether the file decodes completely (truncated files do not)."""
    try:
        with Image.open(io.BytesIO(pathlib.Path(path).read_bytes())) as im:
            im.load()
        return True
    except _IMAGE_ERRORS:
        return False


def read_groups(root: str | os.PathLike) -> dict[str, str]:
    """{file relative to ``root`` (posix): group id} from ``root/manifest.csv`` as
    ``melanoma-bench import`` writes it (columns ``file`` and ``group_id``: the lesion or
    patient id); rows without a group are left out. {} when there is no such manifest."""
    path = pathlib.Path(root) / "manifest.csv"
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"file", "group_id"} <= set(reader.fieldnames or ()):
                return {}
            groups = {row["file"]: row["group_id"] for row in reader if row["group_id"]}
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        log.warning("audit: cannot read %s (%s); lesion/patient groups not used", path, error)
        return {}
    log.info("audit: %d images with a lesion/patient id in %s", len(groups), path)
    return groups


def groups_for(items: Sequence[Any], root: str | os.PathLike) -> dict[str, str]:
    """{str(item.path): group id} for the items under ``root`` that the manifest names."""
    groups = read_groups(root)
    if not groups:
        return {}
    base = pathlib.Path(root).resolve()
    out = {}
    for it in items:
        try:
            rel = pathlib.Path(it.path).resolve().relative_to(base).as_posix()
        except ValueError:
            continue
        if rel in groups:
            out[str(it.path)] = groups[rel]
    return out
