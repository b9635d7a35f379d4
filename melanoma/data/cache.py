"""A persistent on-disk cache of decoded, resized uint8 images: built once, read in chunks.

    melanoma-bench prepare --config paper.toml --data-dir ~/data/melanoma   # builds it alone

files -> parallel PIL decode (the very function ``melanoma.data.decode.load_images`` calls per
image, so every pixel equals today's) -> ``<cache_dir>/decoded-<S>px-<interp>-<key>/``
holding ``pixels.npy`` (uint8 [N, S, S, 3], memory-mappable) and ``meta.json`` (files,
labels, skipped files with reasons, key, version). The key hashes the files' names and
bytes, the labels, the size, the interpolation and the decoder's versions.

Built in a ``.building-*`` folder that is renamed into place only when complete, under a
per-key lock: a killed build leaves no folder that is ever trusted (the next build of that
key removes it), and two processes never decode the same set twice at once. Rows are read
with ``pread`` (through the page cache, not the mapping), so a process holds only the rows
it asked for: resident memory is bounded by the chunk or batch, not by the data set.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from melanoma.data.decode import INTERPOLATIONS, _try_load
from melanoma.data.synthetic import default_cache_dir
from melanoma.util import atomic
from melanoma.util.errors import UserError, unknown_name
from melanoma.util.names import printable

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
PIXELS, META = "pixels.npy", "meta.json"
CHUNK_BYTES = 64 * 2**20  # decoded rows held at once while building or reading in chunks
DEFAULT_WORKERS = 4  # threads; measured faster than processes (docs/performance.md)


@functools.lru_cache(maxsize=1 << 17)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def file_sha256(path) -> bytes:
    """SHA-256 of a file's bytes, read once per process while its inode, size and times stay
    the same (the data key, the decoded cache's key and the training fingerprint all hash
    the same images)."""
    stat = os.stat(path)
    return _sha256_of(os.fspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns,
                      stat.st_ctime_ns)


def content_fingerprint(files) -> str:
    """Hash of the files' names and bytes, in order (the runner's data fingerprint)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(Path(path).name))  # non-UTF-8 names too
        digest.update(file_sha256(path))
    return digest.hexdigest()[:16]


def decoder_versions() -> dict:
    """Pillow and its JPEG/zlib libraries: an upgrade may change decoded pixels."""
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "jpeg": features.version("jpg"),
            "zlib": features.version("zlib")}


def cache_key(fingerprint: str, labels, image_size: int, interpolation: str) -> str:
    """What the cached pixels depend on, hashed: data, labels, size, interpolation, decoder."""
    blob = json.dumps({"version": CACHE_VERSION, "fingerprint": fingerprint,
                       "labels": [int(v) for v in labels], "image_size": int(image_size),
                       "interpolation": interpolation, "decoder": decoder_versions()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DecodedCache:
    """An opened cache: its kept images' files and labels (in input order), and row access."""

    path: Path
    key: str
    image_size: int
    interpolation: str
    files: tuple[Path, ...]
    labels: np.ndarray
    kept_index: np.ndarray  # row i holds input file kept_index[i]
    skipped: tuple[tuple[str, str], ...]  # (file, reason), as load_images reports them
    data_offset: int = field(repr=False)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def row_bytes(self) -> int:
        return self.image_size * self.image_size * 3

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """All rows as a read-only ``np.memmap`` (pages it touches count as resident)."""
        if not len(self):
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return np.load(self.path / PIXELS, mmap_mode="r")

    def read_rows(self, indices) -> np.ndarray:
        """Rows ``indices`` (in that order) as a new uint8 array, read with ``pread``."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        out = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
        flat = out.reshape(len(indices), -1)
        starts = np.flatnonzero(np.diff(indices, prepend=-2) != 1)  # runs of consecutive rows
        ends = np.append(starts[1:], len(indices))
        fd = os.open(self.path / PIXELS, os.O_RDONLY)
        try:
            for start, end in zip(starts.tolist(), ends.tolist()):
                _pread_into(fd, memoryview(flat[start:end]).cast("B"),
                            self.data_offset + int(indices[start]) * self.row_bytes)
        finally:
            os.close(fd)
        return out

    def iter_chunks(self, indices=None, chunk: int | None = None):
        """Yield (row indices, uint8 rows) over ``indices`` (default all), ``chunk`` at a time."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        chunk = chunk or max(1, CHUNK_BYTES // self.row_bytes)
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            yield part, self.read_rows(part)

    def channel_mean(self, indices=None, chunk: int | None = None) -> np.ndarray:
        """Per-channel mean of rows ``indices`` in [0, 255] (float64), from exact integer sums
        per chunk: equal to the in-memory float64 mean bit for bit (sums < 2**53)."""
        sums, count = np.zeros(3, np.uint64), 0
        for _, rows in self.iter_chunks(indices, chunk):
            sums += [rows[..., c].sum(dtype=np.uint64) for c in range(3)]  # ~6x reshape's
            count += rows.shape[0] * rows.shape[1] * rows.shape[2]
        return sums.astype(np.float64) / max(count, 1)


def _npy_header(path: Path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of a .npy file, read from its header."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        shape, fortran, dtype = readers[version](handle)
        return shape, fortran, dtype, handle.tell()


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise OSError(f"decoded-image cache ended early at byte {offset} (file truncated?)")
        view, offset = view[got:], offset + got


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def fit_preprocessing(preprocessing, cache: DecodedCache, indices=None, chunk: int | None = None):
    """``preprocessing.fit(pixels[indices])`` computed from the cache in chunks (the same
    mean bit for bit: exact integer sums, then ``Preprocessing.with_channel_mean``)."""
    if not preprocessing.needs_fit:
        return preprocessing
    return preprocessing.with_channel_mean(cache.channel_mean(indices, chunk))


def folder_name(image_size: int, interpolation: str, key: str) -> str:
    return f"decoded-{image_size}px-{interpolation}-{key}"


def open_or_build(files, labels, image_size: int, interpolation: str = "nearest",
                  cache_dir: str | os.PathLike | None = None, *, fingerprint: str | None = None,
                  workers: int = DEFAULT_WORKERS, executor: str = "thread") -> DecodedCache:
    """The cache of ``files`` at ``image_size``: opened if it exists (nothing is decoded),
    else built (and then opened). ``cache_dir`` defaults to the synthetic data's cache
    folder ($MELANOMA_DATA_CACHE or ~/.cache/melanoma-bench); ``fingerprint`` may pass a
    precomputed :func:`content_fingerprint` of ``files``."""
    if interpolation not in INTERPOLATIONS:
        raise unknown_name("interpolation", interpolation, INTERPOLATIONS)
    files, labels = [Path(f) for f in files], np.asarray(labels, np.int64).reshape(-1)
    if len(files) != len(labels):
        raise ValueError(f"{len(files)} files but {len(labels)} labels")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(fingerprint or content_fingerprint(files), labels, image_size, interpolation)
    target = root / folder_name(image_size, interpolation, key)
    opened = open_cache(target, key, files, labels)
    if opened is not None:
        logger.info("decoded-image cache: %s (%d images, nothing decoded)", target, len(opened))
        return opened
    root.mkdir(parents=True, exist_ok=True)
    with _key_lock(root, key):
        opened = open_cache(target, key, files, labels)  # built meanwhile by another process
        if opened is not None:
            return opened
        _remove_untrusted(root, target, key)
        check_disk_space(root, len(files), image_size)
        staging = Path(tempfile.mkdtemp(prefix=f".building-{key}-", dir=root))
        try:
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide a shared cache from others
            _build(staging, files, labels, image_size, interpolation, key, workers, executor)
            os.rename(staging, target)
            _fsync_dir(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    opened = open_cache(target, key, files, labels)
    if opened is None:
        raise RuntimeError(f"the decoded-image cache {target} did not verify after building")
    return opened


def open_cache(target: Path, key: str, files, labels) -> DecodedCache | None:
    """The cache in ``target`` if it is complete and was built for exactly this key and
    these files; else None (never a partial or foreign cache)."""
    try:
        meta = json.loads((target / META).read_text(encoding="utf-8"))
        shape, fortran, dtype, offset = _npy_header(target / PIXELS)
        size = (target / PIXELS).stat().st_size
    except (OSError, ValueError, KeyError):
        return None
    kept = np.asarray(meta.get("kept_index", []), np.int64)
    s = meta.get("image_size")
    if (meta.get("version") != CACHE_VERSION or meta.get("key") != key
            or meta.get("n_files") != len(files) or dtype != np.uint8 or fortran
            or tuple(shape) != (len(kept), s, s, 3) or size != offset + len(kept) * s * s * 3):
        return None
    skipped = tuple((printable(files[int(i)]), reason) for i, reason in meta["skipped"])
    return DecodedCache(target, key, s, meta["interpolation"], tuple(files[i] for i in kept),
                        np.asarray(labels, np.int64)[kept], kept, skipped, offset)


def check_disk_space(root: Path, n_images: int, image_size: int) -> None:
    """A one-line UserError when ``root``'s disk cannot hold the decoded images."""
    needed = n_images * image_size * image_size * 3 + 2**20  # + header and meta.json
    free = shutil.disk_usage(root).free
    if free < needed:
        raise UserError(f"the decoded-image cache needs {needed / 1e9:.2f} GB free in {root} "
                        f"({n_images:,} images x {image_size}x{image_size}x3 bytes) but only "
                        f"{free / 1e9:.2f} GB is free there: free space, or set another cache "
                        f"folder (MELANOMA_DATA_CACHE or the cache_dir setting)")


@contextlib.contextmanager
def _key_lock(root: Path, key: str, blocking: bool = True):
    """An exclusive ``flock`` per key, released by the kernel if the holder dies; yields
    whether it was taken (always, when ``blocking``)."""
    with open(root / f".decoded-{key}.lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_untrusted(root: Path, target: Path, key: str) -> None:
    """With the key's lock held: a target that failed verification, and leftovers of killed
    builds (of this key, and of any other key whose lock nobody holds), are ours to remove."""
    if target.exists():
        logger.warning("removing %s: incomplete or built for other files", target)
        shutil.rmtree(target)
    for stale in root.glob(".building-*"):
        other = stale.name[len(".building-"):][:16]
        with contextlib.ExitStack() as stack:
            if other != key and not stack.enter_context(_key_lock(root, other, blocking=False)):
                continue  # another process is building that one right now
            logger.info("removing %s (left by an interrupted build)", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(staging: Path, files, labels, size: int, interpolation: str, key: str,
           workers: int, executor: str) -> None:
    """Decode every file into ``staging/pixels.npy`` chunk by chunk, then write meta.json."""
    npy = staging / PIXELS
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3))
    offset = _npy_header(npy)[3]  # rows start right after the header
    kept, skipped = _decode_into(npy, offset, files, size, interpolation, workers, executor)
    if len(kept) < len(files):
        _shrink(npy, offset, len(kept), size)
    with open(npy, "rb") as handle:
        os.fsync(handle.fileno())
    atomic.write_json(staging / META, {
        "version": CACHE_VERSION, "key": key, "image_size": size,
        "interpolation": interpolation, "n_files": len(files), "kept_index": kept,
        "files": [printable(f) for f in files], "labels": [int(v) for v in labels],
        "skipped": skipped, "decoder": decoder_versions()})


def _decode_into(npy: Path, offset: int, files, size: int, interpolation: str,
                 workers: int, executor: str) -> tuple[list[int], list]:
    """Decode in parallel, a chunk at a time, appending kept rows; logs progress."""
    row = size * size * 3
    chunk = max(2 * workers, CHUNK_BYTES // row)
    kept, skipped = [], []
    started, next_log = time.perf_counter(), 0
    with _executor(executor, workers) as pool, open(npy, "r+b") as handle:
        for start in range(0, len(files), chunk):
            part = files[start:start + chunk]
            results = pool.map(_try_load, part, repeat(size), repeat(interpolation))
            for i, (pixels, error) in enumerate(results, start):
                if error is not None:
                    skipped.append([i, error])
                    logger.warning("skipped unreadable image %s (%s)", printable(files[i]), error)
                    continue
                data = memoryview(np.ascontiguousarray(pixels, np.uint8)).cast("B")
                _pwrite_all(handle.fileno(), data, offset + len(kept) * row)
                kept.append(i)
            done = start + len(part)
            if done >= next_log or done == len(files):
                next_log = done + max(1, len(files) // 20)
                _log_progress(done, len(files), time.perf_counter() - started)
    return kept, skipped


def _executor(kind: str, workers: int):
    """Threads (PIL releases the GIL while decoding and resizing), or spawned processes
    (never forked: the caller may hold TensorFlow's threads)."""
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    if kind == "process":
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=workers, mp_context=spawn)
    raise ValueError(f"executor must be 'thread' or 'process', got {kind!r}")


def _log_progress(done: int, total: int, seconds: float) -> None:
    rate = done / max(seconds, 1e-9)
    logger.info("decoding images into the cache: %d/%d (%.0f%%), %.0f images/s, about %.0f s "
                "left", done, total, 100 * done / max(total, 1), rate, (total - done) / rate)


def _shrink(npy: Path, offset: int, n_rows: int, size: int) -> None:
    """Rewrite the header for ``n_rows`` rows (numpy pads it to the same length whatever the
    row count) and cut the unused rows off the end."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (n_rows, size, size, 3)}
    with open(npy, "r+b") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        if handle.tell() != offset:
            raise RuntimeError("numpy changed the .npy header length; cannot shrink in place")
        handle.truncate(offset + n_rows * size * size * 3)


def open_layout(found, image_size: int, interpolation: str = "nearest",
                cache_dir=None, **kwargs) -> tuple[DecodedCache, DecodedCache]:
    """The (train, test) caches of a data set found by ``melanoma.data.layout.discover``."""
    return tuple(open_or_build(split.files, split.labels, image_size, interpolation, cache_dir,
                               **kwargs) for split in (found.train, found.test))
