"""Find the images of a data set in the public Kaggle layout.

``ROOT/{train,test}/{Benign,Malignant}/*.jpg``; folder names match case-insensitively, and
a ROOT holding a single folder that holds ``train/`` and ``test/`` (as the public zip
unpacks) is accepted. Benign = 0, Malignant = 1 (alphanumeric order, as Keras' loaders).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from melanoma.util.errors import UserError

CLASS_NAMES = ("benign", "malignant")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Split:
    """Files and labels of one split, in a stable (sorted) order."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.files)

    def count(self, label: int) -> int:
        return sum(1 for value in self.labels if value == label)


@dataclass(frozen=True)
class DataLayout:
    """The resolved root and the train/test splits found under it."""

    root: Path
    train: Split
    test: Split


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` whose name equals ``name`` ignoring case, if any."""
    matches = [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name]
    if len(matches) > 1:
        raise UserError(f"{folder} has several folders named {name!r} (ignoring case): "
                        f"{', '.join(sorted(p.name for p in matches))}")
    return matches[0] if matches else None


def _resolve_root(root: Path) -> Path:
    """``root`` itself, or its single sub-folder when that one holds the splits."""
    if not root.is_dir():
        raise UserError(f"data directory {root} does not exist or is not a folder")
    if all(_child(root, s) for s in SPLITS):
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and all(_child(subdirs[0], s) for s in SPLITS):
        return subdirs[0]
    missing = [s for s in SPLITS if not _child(root, s)]
    raise UserError(f"{root} has no {' and no '.join(f'{m}/' for m in missing)} folder; "
                    f"expected {root}/{{train,test}}/{{Benign,Malignant}}/*.jpg")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped), sorted by name. Regular
    files only (``is_file`` is a stat): a FIFO named ``x.jpg`` is never opened."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                  and p.is_file())


def read_class_folders(folder: Path) -> Split:
    """Files of ``folder/{Benign,Malignant}`` with labels; both classes must be present."""
    files, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        class_dir = _child(folder, name)
        if class_dir is None:
            raise UserError(f"{folder} has no {name.capitalize()}/ folder (class folders: "
                            f"{', '.join(CLASS_NAMES)}, any case)")
        found = image_files(class_dir)
        if not found:
            raise UserError(f"{class_dir} holds no image files")
        files += found
        labels += [label] * len(found)
    return Split(tuple(files), tuple(labels))


def split_folder(root: str | Path, name: str) -> Path | None:
    """``root``'s sub-folder ``name`` (``train`` or ``test``, any case), or None."""
    root = Path(root)
    return _child(root, name) if root.is_dir() else None


def has_class_folders(folder: Path) -> bool:
    """Whether ``folder`` directly holds Benign/ and Malignant/ folders."""
    return Path(folder).is_dir() and all(_child(Path(folder), n) for n in CLASS_NAMES)


def discover(root: str | Path) -> DataLayout:
    """Resolve ``root`` and list both splits, or raise UserError saying what is missing."""
    resolved = _resolve_root(Path(root).expanduser())
    return DataLayout(resolved, read_class_folders(_child(resolved, "train")),
                      read_class_folders(_child(resolved, "test")))


def data_folders(root: str | Path) -> list[Path]:
    """The folders whose files are read as data (resolved): ``root`` itself when it holds
    class folders directly (``evaluate --data-dir DATA/test``), else its train/, test/ and
    val/ folders, and ``root`` itself."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir() or has_class_folders(root):
        return [root]
    found = []
    for name in (*SPLITS, "val"):
        try:
            child = split_folder(root, name)
        except UserError:
            child = None
        if child is not None:
            found.append(child.resolve())
    return [root, *found]


def refuse_inside_data(root: str | Path, places: dict) -> None:
    """A one-line UserError when one of ``places`` ({what: folder or None}) is the data
    folder or lies inside a folder read as data (its report, models or cache would become
    training images, or change the data's fingerprint)."""
    folders = data_folders(root)
    for what, place in places.items():
        if place is None:
            continue
        resolved = Path(place).expanduser().resolve()
        for i, folder in enumerate(folders):  # a root with splits: its other folders are free
            whole = i > 0 or len(folders) == 1
            if resolved == folder or (whole and folder in resolved.parents):
                raise UserError(f"{what} {place} lies inside the data folder {folder}: what "
                                f"is written there would be read as data; choose a folder "
                                f"outside it")
