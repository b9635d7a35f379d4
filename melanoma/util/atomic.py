"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader never sees a partial file, and a failed write leaves the previous file intact.
Temporary names carry the writer's pid (``.NAME.tmp-PID-XXXX``), so ``sweep_stale`` can
remove what a killed process left behind; finished files get the umask's permissions
(as ``open`` would give them), not ``mkstemp``'s private 0600.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from melanoma.util.errors import UserError
from melanoma.util.names import ESCAPE_ERRORS, printable

_TMP = re.compile(r"^\..+\.tmp-(\d+)-[^/]*$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What the place or the disk refuses (full, quota, read-only, permissions, a file where a
# folder should be): the user's to fix, so one line (exit 2), not a traceback.
PLACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EFBIG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR,
                          errno.ENAMETOOLONG})


@contextmanager
def place_errors(path: Path, action: str = "write", hint: str | None = None,
                 also=frozenset()) -> Iterator[None]:
    """Turn an OSError of ``PLACE_ERRNOS`` (and ``also``) inside the block into a UserError
    naming ``path`` (and ``hint``: what to do)."""
    try:
        yield
    except OSError as error:
        if error.errno not in PLACE_ERRNOS | also:
            raise
        shown = printable(path)
        if len(shown) > 200:  # a 4,000-character name is not read, it is scrolled
            shown = f"{shown[:80]}...{shown[-80:]} ({len(shown)} characters)"
        then = f"; {hint}" if hint else " (earlier files there are left as they were)"
        raise UserError(f"cannot {action} {shown}: {os.strerror(error.errno)}{then}") from None


PATH_ROOM = 255  # bytes kept free below an output folder for the names written inside it


def check_room(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` if the files written inside it (up to ``PATH_ROOM`` more bytes of names)
    stay under the system's path limit; else a one-line UserError, before any work."""
    path = Path(path)
    limit = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    length = len(os.fsencode(path.absolute()))
    if length + PATH_ROOM > limit:
        raise UserError(f"the {what} {printable(path)[:60]}... is {length} bytes long: with "
                        f"the names written inside it that passes this system's path limit "
                        f"of {limit}; choose a shorter path")
    return path


def make_folder(path: str | os.PathLike, hint: str | None = None) -> Path:
    """``path`` as a folder, created with its parents if missing; a UserError when it is a
    file or cannot be created (a parent that cannot exist, e.g. under /proc, included)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{printable(path)} is a file, not a folder; "
                        f"{hint or 'choose another folder'}")
    with place_errors(path, "create the folder", hint, frozenset({errno.ENOENT})):
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def replacing(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` (a file, or a folder with ``directory=True``) for a
    writer that needs a path (savefig, model.save); on clean exit it is renamed over
    ``path``; on any error (or a signal) it is removed and ``path`` is left as it was. A full
    disk or a refused place is a UserError (see ``place_errors``)."""
    path = Path(path)
    make_folder(path.parent)
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    with place_errors(path):
        if directory:
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
            tmp.rmdir()  # the writer creates it
        else:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=path.suffix)
            os.close(fd)
            tmp = Path(name)
    try:
        with place_errors(path):
            yield tmp
            if not directory:
                os.chmod(tmp, 0o666 & ~_umask())
            if directory and path.is_dir():
                import shutil

                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit fsync it and rename it over ``path``.
    Text is written with ``names.ESCAPE_ERRORS``: a non-UTF-8 file name anywhere in it is
    written as ``\\xNN`` instead of failing the write."""
    if "b" not in mode:
        kwargs.setdefault("errors", ESCAPE_ERRORS)
    with replacing(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON; NaN is written as null."""
    write_text(path, json.dumps(_nan_to_none(obj), indent=2, default=str) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that dead writers (same host) left in
    ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TMP.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            _remove(entry)
            removed.append(entry)
    return removed


def _nan_to_none(obj):
    """JSON has no NaN: replace float NaN/inf with None, recursively."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
