"""Duplicate and near-duplicate images, validated on real dermoscopy (ISIC 2017).

Two passes, so that smooth skin with a dark blob does not look like every other lesion:

1. **Candidates** (cheap, O(N^2) dot products in row blocks): every image is reduced to
   greyscale 8x8 thumbnails with zero mean and unit norm, of the whole frame and of 15 more
   :data:`WINDOWS` that leave out 10% of the height and/or width at its start, middle or end
   (the crops a copy may have undergone). The similarity of image i to image j is the best
   correlation of i's whole-frame
   thumbnail with one of j's windows; each image's ``neighbours`` most similar other images
   are candidates (plus every pair >= ``always_check``, so large groups of copies are
   complete). With ``include_flips`` the whole-frame thumbnails of the 7 flips and 90-degree
   rotations compete for the same places (against whole frames only: a copy both flipped and
   cropped is found less reliably). A rank, unlike a hash threshold, does not depend on how
   alike unrelated lesions are in a data set. Explored on ISIC 2017 before this design: the
   64-bit perceptual and difference hashes needed thresholds that pass 10,000-260,000 of the
   3.8 million unrelated pairs to catch 95-100% of 50 cropped copies; one whole-frame 16x16
   thumbnail ranked the source of 14 of 400 cropped copies outside the top 5; with the windows,
   every source ranked in the top 3.
2. **Confirmation** (per candidate, batched): 64x64 greyscale versions are aligned by scale
   and shift (a crop resized back) and global brightness/contrast
   (:func:`melanoma.evaluation.similarity.align_scale_shift`), then scored over their overlap
   by SSIM and by the correlation of band-pass images. A pair is a duplicate when the
   band-pass correlation is >= ``min_corr``.

Defaults were chosen by measurement (the command and the numbers are in
docs/duplicate_audit.md). Python::

    from melanoma.evaluation.dedup import find_duplicate_files, find_duplicate_pairs
    pairs = find_duplicate_files(paths, include_flips=False)   # or find_duplicate_pairs(arrays)
    # DataFrame: i, j (indices, i < j), file_a, file_b, kind ('identical' | 'near'), transform
    # (maps image i onto image j), thumb_corr, ssim, bandpass_corr, overlap

Memory: about 8 KB per image (a 64x64 uint8 image and 16 8x8 float32 thumbnails) plus
(8 with flips) x ``block`` x N float32 similarities; images are decoded ``chunk`` at a time.
Time: the candidate pass is 16 (23 with flips) dot products of 64 numbers per ordered pair of
images, about N^2 * 2,000 (3,000) flops (0.4 s of CPU for 2,747 images); the confirmation about
1 ms of CPU per candidate pair, about 5 per image.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from melanoma.evaluation.similarity import match_pairs

log = logging.getLogger(__name__)

SIZE = 64  # side of the greyscale image that is aligned and compared
THUMB = 8  # side of the candidate thumbnails
# (fraction left out, where the window starts as a share of that fraction) per axis: y, x
_AXIS = ((0.0, 0.0), (0.1, 0.0), (0.1, 0.5), (0.1, 1.0))
WINDOWS = tuple((fy, oy, fx, ox) for fy, oy in _AXIS for fx, ox in _AXIS)  # WINDOWS[0]: whole frame
NEIGHBOURS = 5
ALWAYS_CHECK = 0.99
MIN_CORR = 0.95
MIN_OVERLAP = 0.25  # fraction of the 64x64 image both scores are averaged over

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "flip_lr": lambda x: x[..., :, ::-1],
    "flip_ud": lambda x: x[..., ::-1, :],
    "rot180": lambda x: x[..., ::-1, ::-1],
    "rot90": lambda x: np.rot90(x, 1, axes=(-2, -1)),
    "rot270": lambda x: np.rot90(x, -1, axes=(-2, -1)),
    "transpose": lambda x: np.swapaxes(x, -1, -2),
    "anti_transpose": lambda x: np.rot90(np.swapaxes(x, -1, -2), 2, axes=(-2, -1)),
}
TRANSFORM_NAMES = tuple(TRANSFORMS)
INVERSE = {"rot90": "rot270", "rot270": "rot90"}  # every other transform is its own inverse
PAIR_COLUMNS = ("i", "j", "kind", "transform", "thumb_corr", "ssim", "bandpass_corr", "overlap")

Images = Sequence[np.ndarray | None] | Callable[[int], np.ndarray | None]


@dataclass
class Signatures:
    """What the search keeps per image: ``gray`` (N, 64, 64) uint8, ``thumbs`` (len(WINDOWS), N,
    THUMB*THUMB) float32 (zero mean, unit norm; zero for a flat image), ``digests`` of the
    decoded pixels (None if unreadable) and the indices of the images that could not be read."""

    gray: np.ndarray
    thumbs: np.ndarray
    digests: list[str | None]
    unreadable: list[int] = field(default_factory=list)

    def take(self, indices: Sequence[int]) -> Signatures:
        """The signatures of ``indices`` only (renumbered 0..len-1)."""
        idx = np.asarray(indices, dtype=np.int64)
        where = {int(k): n for n, k in enumerate(idx)}
        return Signatures(self.gray[idx], self.thumbs[:, idx], [self.digests[k] for k in idx],
                          [where[k] for k in self.unreadable if k in where])


def file_loader(paths: Sequence[str | os.PathLike]) -> Callable[[int], np.ndarray | None]:
    """``load(k)``: the k-th file decoded to RGB uint8 by PIL, or None when it is unreadable."""
    def load(k: int) -> np.ndarray | None:
        try:
            with Image.open(paths[k]) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
    return load


def _grey(img: np.ndarray) -> np.ndarray:
    """(SIZE, SIZE) uint8 greyscale of an HxW, HxWx3 or HxWx4 uint8 image (PIL's luma)."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"expected a uint8 HxW, HxWx3 or HxWx4 image, got {arr.dtype} {arr.shape}")
    pil = Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).convert("L")
    return np.asarray(pil.resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def _digest(img: np.ndarray) -> str:
    arr = np.ascontiguousarray(img)
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()


def _normalise(t: np.ndarray) -> np.ndarray:
    t = t - t.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(t, axis=-1, keepdims=True)
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 1e-3)


def thumbnails(gray: np.ndarray) -> np.ndarray:
    """(len(WINDOWS), N, THUMB*THUMB) float32: each window box-resized to THUMB x THUMB,
    zero mean, unit norm (flat images: zeros)."""
    out = np.zeros((len(WINDOWS), len(gray), THUMB * THUMB), dtype=np.float32)
    for k, img in enumerate(gray):
        pil = Image.fromarray(img)
        for w, (fy, oy, fx, ox) in enumerate(WINDOWS):
            y0, x0 = oy * fy * SIZE, ox * fx * SIZE
            box = (x0, y0, x0 + SIZE * (1 - fx), y0 + SIZE * (1 - fy))
            small = pil.resize((THUMB, THUMB), Image.Resampling.BOX, box=box)
            out[w, k] = np.asarray(small, dtype=np.float32).reshape(-1)
    return _normalise(out)


def compute_signatures(images: Images, n_images: int | None = None, *, chunk: int = 256,
                       workers: int | None = None) -> Signatures:
    """Decode every image once (``chunk`` at a time, in threads) and keep its signatures.

    ``images`` is a sequence of uint8 arrays or a ``load(k)`` callable (then ``n_images`` is
    required); an entry or a load result of None marks an unreadable image.
    """
    if callable(images):
        if n_images is None:
            raise ValueError("n_images is required when images is a callable")
        load = images
    else:
        n_images = len(images) if n_images is None else n_images
        load = images.__getitem__
    workers = workers or min(4, os.cpu_count() or 1)
    gray = np.zeros((n_images, SIZE, SIZE), dtype=np.uint8)
    digests: list[str | None] = [None] * n_images

    def one(k: int):
        img = load(k)
        return (None, None) if img is None else (_grey(img), _digest(img))

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, n_images, chunk):
            ks = range(start, min(start + chunk, n_images))
            for k, (g, d) in zip(ks, pool.map(one, ks)):
                if g is not None:
                    gray[k], digests[k] = g, d
    unreadable = [k for k, d in enumerate(digests) if d is None]
    if unreadable:
        log.warning("%d of %d images could not be read; they are left out", len(unreadable), n_images)
    return Signatures(gray, thumbnails(gray), digests, unreadable)


def transformed_thumbs(thumbs: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(len(names), N, THUMB*THUMB): each name's transform applied to every thumbnail."""
    grid = thumbs.reshape(-1, THUMB, THUMB)
    return np.stack([np.ascontiguousarray(TRANSFORMS[t](grid)).reshape(len(thumbs), THUMB * THUMB)
                     for t in names])


def similarities(sig: Signatures, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(T, len(rows), N): similarity of each row's transformed thumbnail to every image.

    ``queries`` is :func:`transformed_thumbs` of the whole-frame thumbnails (transform 0 is
    "none"): the untransformed query meets the best of the other image's windows, the others
    meet its whole frame.
    """
    sim = queries[:, rows] @ sig.thumbs[0].T
    for w in range(1, len(WINDOWS)):
        np.maximum(sim[0], queries[0, rows] @ sig.thumbs[w].T, out=sim[0])
    return sim


def candidate_pairs(sig: Signatures, *, neighbours: int = NEIGHBOURS, include_flips: bool = False,
                    always_check: float = ALWAYS_CHECK, block: int = 256) -> pd.DataFrame:
    """Pairs worth confirming: columns i < j, transform (applied to i), thumb_corr.

    For every image, its ``neighbours`` best (other image, transform) matches by
    :func:`similarities`, and every match >= ``always_check``. Unreadable images take no part.
    """
    names = TRANSFORM_NAMES if include_flips else ("none",)
    n = sig.thumbs.shape[1]
    queries = transformed_thumbs(sig.thumbs[0], names)  # (T, N, D)
    ok = np.ones(n, dtype=bool)
    ok[sig.unreadable] = False
    found: dict[tuple[int, int, int], float] = {}
    k = max(0, min(neighbours, len(names) * n - 1))
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sim = similarities(sig, rows, queries)
        sim[:, ~ok[rows], :] = -np.inf
        sim[:, :, ~ok] = -np.inf
        sim[:, np.arange(len(rows)), rows] = -np.inf  # an image is not its own duplicate
        flat = sim.transpose(1, 0, 2).reshape(len(rows), -1)  # (B, T*N)
        picks = np.argpartition(-flat, k - 1, axis=1)[:, :k] if k else np.zeros((len(rows), 0), int)
        rr, cc = np.nonzero(flat >= always_check)
        for r, c in [*((r, c) for r, row in enumerate(picks) for c in row), *zip(rr, cc)]:
            value = flat[r, c]
            if not np.isfinite(value):
                continue
            t, j = divmod(int(c), n)
            i = int(rows[r])
            key = (i, j, t) if i < j else (j, i, TRANSFORM_NAMES.index(INVERSE.get(names[t], names[t])))
            found[key] = max(found.get(key, -1.0), float(value))
    keys = sorted(found)
    return pd.DataFrame({"i": np.array([a for a, _, _ in keys], dtype=np.int64),
                         "j": np.array([b for _, b, _ in keys], dtype=np.int64),
                         "transform": [TRANSFORM_NAMES[t] for _, _, t in keys],
                         "thumb_corr": np.array([found[key] for key in keys], dtype=np.float64)})


def score_pairs(sig: Signatures, cands: pd.DataFrame, *, batch: int = 512) -> pd.DataFrame:
    """``cands`` with ssim, bandpass_corr and overlap added (aligned comparison at 64x64)."""
    out = {"ssim": [], "bandpass_corr": [], "overlap": []}
    for start in range(0, len(cands), batch):
        part = cands.iloc[start:start + batch]
        a = np.stack([TRANSFORMS[t](sig.gray[i]) for i, t in zip(part["i"], part["transform"])])
        b = sig.gray[part["j"].to_numpy()]
        s, c, o = match_pairs(a.astype(np.float32), b.astype(np.float32))
        out["ssim"].append(s)
        out["bandpass_corr"].append(c)
        out["overlap"].append(o)
    scored = cands.copy()
    for key, parts in out.items():
        scored[key] = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    return scored


def identical_pairs(sig: Signatures) -> pd.DataFrame:
    """All pairs i < j whose decoded pixels are the same (scores 1 by definition)."""
    groups: dict[str, list[int]] = {}
    for k, d in enumerate(sig.digests):
        if d is not None:
            groups.setdefault(d, []).append(k)
    pairs = [(a, b) for g in groups.values() for x, a in enumerate(g) for b in g[x + 1:]]
    df = pd.DataFrame(pairs, columns=["i", "j"], dtype="int64")
    df["kind"], df["transform"] = "identical", "none"
    for col in ("thumb_corr", "ssim", "bandpass_corr", "overlap"):
        df[col] = 1.0
    return df


def find_duplicate_pairs(images: Images, n_images: int | None = None, *, include_flips: bool = False,
                         neighbours: int = NEIGHBOURS, min_corr: float = MIN_CORR,
                         min_overlap: float = MIN_OVERLAP, always_check: float = ALWAYS_CHECK,
                         workers: int | None = None, signatures: Signatures | None = None) -> pd.DataFrame:
    """Identical and near-duplicate pairs among ``images`` (see the module docstring).

    Returns a DataFrame with :data:`PAIR_COLUMNS`, one row per unordered pair (i < j), sorted;
    ``transform`` is what maps image i onto image j ('none' unless ``include_flips``).
    ``attrs``: unreadable (indices), n_images, n_candidates and the settings. Pass
    ``signatures`` (from :func:`compute_signatures`) to search the same images again cheaply.
    """
    if not 0.0 < min_corr <= 1.0 or neighbours < 0:
        raise ValueError("min_corr must be in (0, 1] and neighbours >= 0")
    sig = signatures if signatures is not None else compute_signatures(images, n_images, workers=workers)
    same = identical_pairs(sig)
    cands = candidate_pairs(sig, neighbours=neighbours, include_flips=include_flips,
                            always_check=always_check)
    known = set(zip(same["i"], same["j"]))
    cands = cands[[(i, j) not in known for i, j in zip(cands["i"], cands["j"])]]
    scored = score_pairs(sig, cands.reset_index(drop=True))
    near = scored[(scored["bandpass_corr"] >= min_corr) & (scored["overlap"] >= min_overlap)].copy()
    near = near.sort_values("bandpass_corr", ascending=False).drop_duplicates(["i", "j"])
    near["kind"] = "near"
    pairs = pd.concat([same, near[list(PAIR_COLUMNS)]], ignore_index=True) if len(near) else same
    pairs = pairs[list(PAIR_COLUMNS)].sort_values(["i", "j"]).reset_index(drop=True)
    pairs.attrs.update(unreadable=list(sig.unreadable), n_images=len(sig.digests),
                       n_candidates=len(cands), include_flips=include_flips, neighbours=neighbours,
                       min_corr=min_corr, min_overlap=min_overlap, always_check=always_check)
    log.info("%d images: %d candidate pairs, %d identical, %d near duplicates", len(sig.digests),
             len(cands), len(same), len(near))
    return pairs


def find_duplicate_files(paths: Sequence[str | os.PathLike], **kwargs) -> pd.DataFrame:
    """:func:`find_duplicate_pairs` over image files, with ``file_a``/``file_b`` (str) added for
    ``i``/``j``; unreadable files are in ``attrs['unreadable_files']``."""
    paths = [str(p) for p in paths]
    pairs = find_duplicate_pairs(file_loader(paths), n_images=len(paths), **kwargs)
    pairs.insert(2, "file_a", [paths[i] for i in pairs["i"]])
    pairs.insert(3, "file_b", [paths[j] for j in pairs["j"]])
    pairs.attrs["unreadable_files"] = [paths[k] for k in pairs.attrs["unreadable"]]
    return pairs
