"""A lock file per output or models folder, so two runs never write into the same one.

``run`` holds ``<folder>/.melanoma-bench.lock`` (JSON: pid, host, start time) for its whole
duration. A second run fails fast with one line naming the holder. A lock left by a dead
process on this host is taken over; one from another host cannot be checked and is never
taken over (the message says which file to remove).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from melanoma.util import atomic
from melanoma.util.errors import UserError

LOCK_NAME = ".melanoma-bench.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stale(holder: dict | None) -> bool:
    """A lock whose process is gone (same host) or whose content is unreadable."""
    if holder is None or not isinstance(holder.get("pid"), int):
        return True
    return holder.get("host") == socket.gethostname() and not _alive(holder["pid"])


def _in_use(folder: Path, holder: dict) -> UserError:
    return UserError(f"{folder} is in use by another run (pid {holder['pid']} on "
                     f"{holder.get('host')}, started {holder.get('started')}); wait for it, "
                     f"or remove {folder / LOCK_NAME} if that run is gone")


def check_free(folder: Path) -> None:
    """A UserError if a live process holds ``folder``'s lock (e.g. a run still writing the
    files a report would read); takes nothing."""
    path = Path(folder) / LOCK_NAME
    if path.is_file():
        holder = _holder(path)
        if not _stale(holder):
            raise _in_use(Path(folder), holder)


def acquire(folder: Path) -> Path:
    """Create ``folder/.melanoma-bench.lock`` atomically (link of a complete temp file)."""
    folder = atomic.make_folder(folder)  # a file or an uncreatable folder: one line
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    tmp = folder / f"{LOCK_NAME}.{os.getpid()}.tmp"
    with atomic.place_errors(folder, "write in"):  # read-only, full
        tmp.write_text(json.dumps(me))
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)  # fails if a lock exists; never a half-written lock
                return path
            except FileExistsError:
                if path.is_dir() or not path.is_file():
                    raise UserError(f"{path} is not a lock file (a folder or special file); "
                                    f"remove it") from None
                holder = _holder(path)
                if not _stale(holder):
                    raise _in_use(folder, holder) from None
                path.unlink(missing_ok=True)  # dead holder: take over
        raise UserError(f"could not lock {folder}: {path} keeps reappearing")
    finally:
        tmp.unlink(missing_ok=True)


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    holder = _holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # fails, as it should, once anything was written there
    except OSError:
        pass


@contextmanager
def hold(*folders: Path) -> Iterator[None]:
    """Lock every distinct folder for the duration of the block; released on any exit. A
    folder this created is removed again if nothing was written in it (a run that failed
    before writing leaves no empty output or models folder behind)."""
    with ExitStack() as stack:
        for folder in dict.fromkeys(Path(f).resolve() for f in folders):
            if not folder.exists():
                stack.callback(_remove_if_empty, folder)
            path = acquire(folder)
            stack.callback(release, path)
        yield
