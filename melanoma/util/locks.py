"""Lock files: one per output folder, so two different runs never write into the same one,
and one per training job, so processes sharing a models folder never train a job twice.

``run`` holds ``<out>/.melanoma-bench.lock`` (JSON: pid, host, start time, plan) for its
whole duration. A second run of another plan fails fast with one line naming the holder; a
process of the same plan (same config and models folder) joins it (``acquire_or_join``).
A job lock (``try_lock``) is a file of the same form that is taken or skipped, never
waited on. A lock left by a dead
process on this host is taken over; one from another host cannot be checked and is never
taken over (the message says which file to remove).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
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


def _take(path: Path, plan: str | None = None) -> dict | None:
    """Create the lock file ``path`` atomically (link of a complete temp file); returns None
    when taken, else the live holder's record. A dead holder's lock is taken over."""
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
          **({"plan": plan} if plan else {})}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with atomic.place_errors(path.parent, "write in"):  # read-only, full
        tmp.write_text(json.dumps(me))
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)  # fails if a lock exists; never a half-written lock
                return None
            except FileExistsError:
                if path.is_dir() or not path.is_file():
                    raise UserError(f"{path} is not a lock file (a folder or special file); "
                                    f"remove it") from None
                holder = _holder(path)
                if not _stale(holder):
                    return holder
                path.unlink(missing_ok=True)  # dead holder: take over
        raise UserError(f"could not lock {path.parent}: {path} keeps reappearing")
    finally:
        tmp.unlink(missing_ok=True)


def _in_use(folder: Path, path: Path, holder: dict) -> UserError:
    return UserError(f"{folder} is in use by another run (pid {holder['pid']} on "
                     f"{holder.get('host')}, started {holder.get('started')}); wait for it, "
                     f"or remove {path} if that run is gone")


def check_free(folder: Path) -> None:
    """A UserError if a live process holds ``folder``'s lock (e.g. a run still writing the
    files a report would read); takes nothing."""
    path = Path(folder) / LOCK_NAME
    if path.is_file():
        holder = _holder(path)
        if not _stale(holder):
            raise _in_use(Path(folder), path, holder)


def acquire(folder: Path, plan: str | None = None) -> Path:
    """Create ``folder/.melanoma-bench.lock`` (recording ``plan``, if given), or fail with one
    line naming the live holder."""
    folder = atomic.make_folder(folder)  # a file or an uncreatable folder: one line
    path = folder / LOCK_NAME
    holder = _take(path, plan)
    if holder is not None:
        raise _in_use(folder, path, holder) from None
    return path


def acquire_or_join(folder: Path, plan: str) -> Path | None:
    """Like ``acquire``, but a live holder working on the same ``plan`` (another process of
    the same config and models folder) is joined instead: returns None, holding nothing."""
    folder = atomic.make_folder(folder)
    path = folder / LOCK_NAME
    holder = _take(path, plan)
    if holder is None:
        return path
    if holder.get("plan") == plan:
        return None
    raise _in_use(folder, path, holder)


def wait_acquire(folder: Path, plan: str, poll: float = 1.0, timeout: float = 1800.0) -> Path:
    """``acquire`` that waits (up to ``timeout`` seconds) while a process of the same ``plan``
    holds the lock (it is writing the same report); any other holder is an error at once."""
    deadline = time.monotonic() + timeout
    while (path := acquire_or_join(folder, plan)) is None:
        if time.monotonic() > deadline:
            holder = _holder(Path(folder) / LOCK_NAME) or {"pid": "?"}
            raise _in_use(Path(folder), Path(folder) / LOCK_NAME, holder)
        time.sleep(poll)
    return path


def try_lock(path: Path) -> bool:
    """Take the lock file ``path`` (a job's) if no live process holds it; never waits."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _take(Path(path)) is None


def held_by_other(path: Path) -> dict | None:
    """The record of the live process (not this one) holding lock file ``path``, if any."""
    holder = _holder(Path(path)) if Path(path).exists() else None
    if holder is None or _stale(holder):
        return None
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return None
    return holder


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
