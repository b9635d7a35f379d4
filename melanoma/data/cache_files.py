"""The decoded-image cache's files and places: the .npy header, whole reads and writes at
an offset, each row's CRC-32, enough free space, and never a cache inside the data."""
from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from melanoma.data.layout import CLASS_NAMES
from melanoma.util import atomic
from melanoma.util.errors import UserError


def npy_header(path: Path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of a .npy file, read from its header."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        shape, fortran, dtype = readers[version](handle)
        return shape, fortran, dtype, handle.tell()


def pread_into(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise OSError(f"decoded-image cache ended early at byte {offset} (file truncated?)")
        view, offset = view[got:], offset + got


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def mismatched(rows: np.ndarray, indices: np.ndarray, crcs) -> list[bool]:
    """For each row (uint8 [N, ...]) read from rows ``indices``: does its CRC-32 differ
    from the one recorded when it was built?"""
    flat = rows.reshape(len(indices), -1)
    return [zlib.crc32(flat[j]) != crcs[i] for j, i in enumerate(indices.tolist())]


CACHE_HINT = ("set MELANOMA_DATA_CACHE (or the data.cache_dir setting) to a folder you can "
              "write")


def cache_place(root: Path):
    """Errors of a cache folder that is a file, read-only, unreachable or full: one line
    naming it and what to do."""
    return atomic.place_errors(root, "write in the cache folder", CACHE_HINT)


def check_disk_space(root: Path, n_images: int, image_size: int) -> None:
    """A one-line UserError when ``root``'s disk cannot hold the decoded images."""
    needed = n_images * image_size * image_size * 3 + 2**20  # + header and meta.json
    free = shutil.disk_usage(root).free
    if free < needed:
        raise UserError(f"the decoded-image cache needs {needed / 1e9:.2f} GB free in {root} "
                        f"({n_images:,} images x {image_size}x{image_size}x3 bytes) but only "
                        f"{free / 1e9:.2f} GB is free there: free space, or set another cache "
                        f"folder (MELANOMA_DATA_CACHE or the cache_dir setting)")


def refuse_inside_data(root: Path, files) -> None:
    """A one-line UserError when the cache folder lies in a split folder the images are
    read from (the folder holding their Benign/ and Malignant/ folders)."""
    resolved = root.expanduser().resolve()
    for split in {Path(f).parent.parent for f in files
                  if Path(f).parent.name.lower() in CLASS_NAMES}:
        split = split.resolve()
        if resolved == split or split in resolved.parents:
            raise UserError(f"the decoded-image cache folder {root} (MELANOMA_DATA_CACHE or "
                            f"the cache_dir setting) lies inside the data folder {split}; "
                            f"choose a folder outside it")
