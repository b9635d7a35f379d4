"""Pixel-level similarity of image pairs: SSIM, band-pass correlation, scale+shift alignment.

Used by :mod:`melanoma.evaluation.dedup` to confirm candidate duplicate pairs. Everything is
batched: arrays are (P, S, S) stacks of greyscale images (P pairs), float32 in [0, 255].

* :func:`ssim` is the SSIM of Wang et al. (2004) exactly as scikit-image's
  ``structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` computes it (11x11 Gaussian window, reflect padding, mean over
  the interior without a 5-pixel border), so numbers can be compared with the literature.
* :func:`align_scale_shift` finds per pair the axis-aligned scale and shift (4 parameters, the
  geometry of "crop a part and resize it back") and a global gain/offset that map ``b`` onto
  ``a``, by Lucas-Kanade (Gauss-Newton) on a 16 -> 32 pixel pyramid. The warp is separable, so
  warping a stack is two batched matrix products, not a gather.
* :func:`match_pairs` warps at full size and scores the overlap: SSIM and the correlation of
  band-pass (difference-of-Gaussians) images. Smooth skin makes SSIM high for unrelated lesions
  (flat areas score ~1); the band-pass correlation looks only at texture and edges, which is
  what separates a copy from another lesion on plain skin (measured: docs/duplicate_audit.md).

Coordinates are normalised to [-1, 1] with pixel i of S at ``(2i + 1) / S - 1`` (pixel-area
convention), so one set of parameters means the same warp at every pyramid level.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: the 11x11 window's half width
BANDPASS_SIGMAS = (0.8, 3.0)  # difference of Gaussians, in pixels of the compared size
SCALE_RANGE = (0.8, 1.25)  # searched scale per axis (a 10% crop is a scale of 0.9 or 1.11)
SHIFT_RANGE = 0.25  # searched shift per axis, in half-widths (normalised units)
IDENTITY = np.array([1.0, 1.0, 0.0, 0.0], dtype=np.float32)  # scale_y, scale_x, shift_y, shift_x


@functools.lru_cache(maxsize=32)
def _blur_matrix(size: int, sigma: float, dtype: str) -> np.ndarray:
    """(size, size) matrix M with M @ x == scipy's gaussian_filter1d(x, sigma, axis=0)."""
    eye = np.eye(size, dtype=np.float64)
    return ndimage.gaussian_filter1d(eye, sigma, axis=0, truncate=SSIM_TRUNCATE).astype(dtype)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the last two axes (reflect padding, as scikit-image's SSIM).

    Two matrix products with the filter's matrix: the same numbers as ``gaussian_filter``,
    several times faster on stacks of small images (BLAS).
    """
    h, w = x.shape[-2:]
    rows = _blur_matrix(h, float(sigma), x.dtype.str)
    cols = _blur_matrix(w, float(sigma), x.dtype.str)
    return rows @ x @ cols.T


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 255.0,
             sigma: float = SSIM_SIGMA, dtype=np.float64) -> np.ndarray:
    """Local SSIM of ``a`` and ``b`` (same shape, (..., H, W)), Gaussian-weighted.

    ``dtype`` float32 is what the duplicate search uses (about 1e-4 from float64 on 0..255).
    """
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {a.shape} vs {b.shape}")
    mu_a, mu_b = _blur(a, sigma), _blur(b, sigma)
    var_a = _blur(a * a, sigma) - mu_a ** 2
    var_b = _blur(b * b, sigma) - mu_b ** 2
    cov = _blur(a * b, sigma) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray | float:
    """Mean SSIM over the interior (border of :data:`SSIM_RADIUS` pixels left out).

    2-D inputs give a float; (P, H, W) stacks give P values.
    """
    r = SSIM_RADIUS
    m = ssim_map(a, b, data_range)[..., r:-r, r:-r]
    out = m.mean(axis=(-2, -1))
    return float(out) if np.ndim(out) == 0 else out


def _centres(size: int) -> np.ndarray:
    return ((2 * np.arange(size) + 1) / size - 1).astype(np.float32)


def interp_matrix(pos: np.ndarray, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolation matrices (P, n_out, n_src) for pixel positions ``pos`` (P, n_out).

    Row k samples the source at ``pos[:, k]``; positions outside [0, n_src - 1] are clamped
    to the edge and reported in the second result (P, n_out) bool ``valid``.
    """
    valid = (pos >= -1e-4) & (pos <= n_src - 1 + 1e-4)
    pos = np.clip(pos, 0, n_src - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_src - 2)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros(pos.shape + (n_src,), dtype=np.float32)
    np.put_along_axis(m, lo[..., None], (1 - frac)[..., None], axis=-1)
    np.put_along_axis(m, lo[..., None] + 1, frac[..., None], axis=-1)
    return m, valid


def _warp_matrices(params: np.ndarray, size: int):
    c = _centres(size)
    to_pix = lambda n: ((n + 1) * size - 1) / 2
    my, vy = interp_matrix(to_pix(params[:, 0, None] * c + params[:, 2, None]), size)
    mx, vx = interp_matrix(to_pix(params[:, 1, None] * c + params[:, 3, None]), size)
    return my, mx, vy, vx


def warp_scale_shift(b: np.ndarray, params: np.ndarray):
    """``b`` (P, S, S) sampled at (scale_y * y + shift_y, scale_x * x + shift_x) (normalised).

    Returns the warped stack and the valid rows (P, S) and columns (P, S): output pixels whose
    source lies inside ``b``.
    """
    my, mx, vy, vx = _warp_matrices(params, b.shape[-1])
    return my @ b @ mx.transpose(0, 2, 1), vy, vx


def _box_down(x: np.ndarray, size: int) -> np.ndarray:
    p, s = x.shape[0], x.shape[-1]
    f = s // size
    if f * size != s:
        raise ValueError(f"cannot box-downsample {s} pixels to {size}")
    return x.reshape(p, size, f, size, f).mean(axis=(2, 4))


def _gauss_newton_step(a, b, gy_b, gx_b, params, size):
    """One Lucas-Kanade update of ``params`` (P, 4) with the gain of b fitted to a."""
    p = a.shape[0]
    my, mx, vy, vx = _warp_matrices(params, size)
    mxt = mx.transpose(0, 2, 1)
    bw, gy, gx = (my @ x @ mxt for x in (b, gy_b, gx_b))
    mask = (vy[:, :, None] & vx[:, None, :]).astype(np.float32)
    n = mask.sum(axis=(1, 2)) + 1e-6
    ac = (a - ((a * mask).sum(axis=(1, 2)) / n)[:, None, None]) * mask
    bc = (bw - ((bw * mask).sum(axis=(1, 2)) / n)[:, None, None]) * mask
    gain = np.sqrt((ac ** 2).sum(axis=(1, 2)) / ((bc ** 2).sum(axis=(1, 2)) + 1e-6))[:, None, None]
    resid = (ac - gain * bc).reshape(p, -1)
    k = size / 2.0  # d(pixel) / d(normalised coordinate)
    gy, gx = gy * (k * gain * mask), gx * (k * gain * mask)
    c = _centres(size)
    jac = np.stack([(gy * c[None, :, None]).reshape(p, -1), (gx * c[None, None, :]).reshape(p, -1),
                    gy.reshape(p, -1), gx.reshape(p, -1)], axis=1)  # (P, 4, S*S)
    hess = jac @ jac.transpose(0, 2, 1) + np.eye(4, dtype=np.float32) * 1e-2
    step = np.linalg.solve(hess, (jac @ resid[..., None]))[..., 0]
    params = params + step.astype(np.float32)
    params[:, :2] = np.clip(params[:, :2], *SCALE_RANGE)
    params[:, 2:] = np.clip(params[:, 2:], -SHIFT_RANGE, SHIFT_RANGE)
    return params


def align_scale_shift(a: np.ndarray, b: np.ndarray, sizes: tuple[int, ...] = (16, 32),
                      iterations: tuple[int, ...] = (8, 6)) -> np.ndarray:
    """Per pair, the (scale_y, scale_x, shift_y, shift_x) that best maps ``b`` onto ``a``.

    ``a`` and ``b`` are (P, S, S) float32 stacks, S a multiple of every level in ``sizes``.
    Gauss-Newton on the least-squares difference after fitting b's gain to a's, coarse to fine,
    from the identity; parameters stay within :data:`SCALE_RANGE` and :data:`SHIFT_RANGE`.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    params = np.tile(IDENTITY, (a.shape[0], 1))
    for size, n_iter in zip(sizes, iterations):
        a_l = ndimage.gaussian_filter(_box_down(a, size), (0, 0.7, 0.7))
        b_l = ndimage.gaussian_filter(_box_down(b, size), (0, 0.7, 0.7))
        gy_b, gx_b = np.gradient(b_l, axis=(1, 2))
        for _ in range(n_iter):
            params = _gauss_newton_step(a_l, b_l, gy_b, gx_b, params, size)
    return params


def _erode(valid: np.ndarray, r: int) -> np.ndarray:
    """Shrink each (P, S) run of valid positions by ``r`` on both sides."""
    v = valid.copy()
    if r <= 0:
        return v
    for shift in range(1, r + 1):
        v[:, shift:] &= valid[:, :-shift]
        v[:, :-shift] &= valid[:, shift:]
    v[:, :r] = False
    v[:, -r:] = False
    return v


def match_pairs(a: np.ndarray, b: np.ndarray, params: np.ndarray | None = None):
    """Score pairs after alignment: (ssim, bandpass_corr, overlap), each (P,).

    ``b`` is warped by ``params`` (default: :func:`align_scale_shift`) and given ``a``'s mean and
    standard deviation over the overlap (a global brightness/contrast fit); outside the overlap
    it is replaced by ``a``. Both scores are averaged over the overlap shrunk by the SSIM
    window's radius, whose fraction of the image is ``overlap``.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if params is None:
        params = align_scale_shift(a, b)
    bw, vy, vx = warp_scale_shift(b, params)
    mask = (vy[:, :, None] & vx[:, None, :]).astype(np.float32)
    n = mask.sum(axis=(1, 2)) + 1e-6
    mean = lambda x: ((x * mask).sum(axis=(1, 2)) / n)[:, None, None]
    ma, mb = mean(a), mean(bw)
    sa = np.sqrt(mean((a - ma) ** 2))
    sb = np.sqrt(mean((bw - mb) ** 2)) + 1e-6
    bc = ((bw - mb) * (sa / sb) + ma) * mask + a * (1 - mask)
    inner = (_erode(vy, SSIM_RADIUS)[:, :, None] & _erode(vx, SSIM_RADIUS)[:, None, :])
    inner = inner.astype(np.float32)
    area = np.maximum(inner.sum(axis=(1, 2)), 1.0)
    s = (ssim_map(a, bc, dtype=np.float32) * inner).sum(axis=(1, 2)) / area
    s1, s2 = BANDPASS_SIGMAS
    ha = (_blur(a, s1) - _blur(a, s2)) * inner
    hb = (_blur(bc, s1) - _blur(bc, s2)) * inner
    corr = (ha * hb).sum(axis=(1, 2)) / np.sqrt((ha * ha).sum(axis=(1, 2)) * (hb * hb).sum(axis=(1, 2)) + 1e-9)
    return s, corr, inner.mean(axis=(1, 2))
