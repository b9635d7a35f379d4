"""The Grad-CAM localisation figure: each image with its lesion outline, above its heat map
with the same outline. Pure numpy/matplotlib (the maps are computed elsewhere).

    localisation_figure(pixels, masks, heatmaps, out / "gradcam_localisation.png",
                        captions=[f"mass in lesion {m:.2f} / area {a:.2f}" for m, a in ...])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from melanoma.reporting import figures as plots
from melanoma.util.errors import UserError


def _outline(ax, mask, threshold: float) -> None:
    """The mask's ``threshold`` contour (the lesion border) in white over a dark edge."""
    mask = np.asarray(mask, np.float32)
    if mask.min() < threshold <= mask.max():
        for colour, width in (("black", 2.2), ("white", 1.1)):
            ax.contour(mask, levels=[threshold], colors=colour, linewidths=width)


def localisation_figure(images, masks, heatmaps, path: Path, captions=None,
                        title: str | None = None, threshold: float = 0.5,
                        alpha: float = 0.5) -> Path:
    """Two rows per image column: the uint8 RGB image with the lesion outline (mask at
    ``threshold``), and the heat map (jet, in [0, 1]) over it with the same outline.
    ``images`` (N, H, W, 3), ``masks`` and ``heatmaps`` (N, H, W); ``captions``: N strings."""
    images, masks, heatmaps = (np.asarray(a) for a in (images, masks, heatmaps))
    n = len(images)
    if not n or masks.shape != images.shape[:3] or heatmaps.shape != images.shape[:3]:
        raise UserError(f"localisation_figure needs N >= 1 images (N, H, W, 3) with masks and "
                        f"heat maps (N, H, W): got {images.shape}, {masks.shape}, "
                        f"{heatmaps.shape}")
    captions = list(captions) if captions is not None else [""] * n
    fig = Figure(figsize=(1.9 * n + 0.6, 4.6))
    grid = fig.add_gridspec(2, n, hspace=0.28, wspace=0.06, top=0.84, bottom=0.02, left=0.06,
                            right=0.99)
    for i in range(n):
        top, bottom = fig.add_subplot(grid[0, i]), fig.add_subplot(grid[1, i])
        top.imshow(images[i])
        bottom.imshow(images[i])
        shown = bottom.imshow(np.clip(heatmaps[i], 0, 1), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        for ax in (top, bottom):
            _outline(ax, masks[i], threshold)
            ax.set_xticks([])
            ax.set_yticks([])
        top.set_title(captions[i], fontsize=7.5)
    fig.axes[0].set_ylabel("image, lesion outline", fontsize=8)
    fig.axes[1].set_ylabel("Grad-CAM (malignant)", fontsize=8)
    fig.colorbar(shown, ax=fig.axes, fraction=0.012, pad=0.01).ax.tick_params(labelsize=7)
    fig.suptitle(title or "Grad-CAM localisation (white: lesion border from the generator)",
                 fontsize=9.5)
    return plots.save_figure(fig, Path(path))
