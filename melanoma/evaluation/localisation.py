"""Does Grad-CAM point at the lesion? Measured on the generated data, whose lesion masks the
generator knows: on correctly classified malignant images, the share of heat-map mass inside
the lesion vs the lesion's share of the image (a map blind to the lesion scores about 1x).

    result = check_synthetic(model, preprocessing, spec, files, labels, probs, pixels)
    result.summary   # n, mean_mass_inside, mean_area_fraction, ratio, shuffled_mass_inside, ...
    localisation_figure(pixels[result.indices[:8]], result.masks[:8], result.heatmaps[:8],
                        out / "gradcam_localisation.png", result.captions()[:8])

``shuffled_mass_inside`` is a control: each map scored against another image's mask. The
generator centres every lesion (within 5% of the side), so a map that only favours the
centre also beats the area fraction; own-mask mass above the shuffled one is what shows
that the map follows each lesion's shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from melanoma.data import synthetic
from melanoma.evaluation.gradcam import (
    area_fraction,
    gradcam,
    localisation,
    mass_inside,
)


@dataclass(frozen=True)
class Localisation:
    """The measured figure and what it was measured on (indices into the given files)."""

    summary: dict
    indices: np.ndarray
    heatmaps: np.ndarray  # (n, H, W) in [0, 1]
    masks: np.ndarray  # (n, H, W) soft lesion masks in [0, 1]

    def captions(self) -> list[str]:
        """Per image: ``mass in lesion 0.83 / area 0.27``."""
        return [f"mass in lesion {mass_inside(h, m):.2f} / area {area_fraction(m):.2f}"
                for h, m in zip(self.heatmaps, self.masks)]


def masks_for(spec: synthetic.SyntheticSpec, files, size: int) -> np.ndarray:
    """The generator's lesion masks of ``files`` (relative names), resized (bilinear) to
    ``size`` x ``size`` like the images the model saw."""
    masks = []
    for file in files:
        mask = synthetic.lesion_mask(spec, file)
        if mask.shape != (size, size):
            mask = np.asarray(Image.fromarray(mask, mode="F").resize(
                (size, size), Image.Resampling.BILINEAR))
        masks.append(np.clip(mask, 0.0, 1.0))
    return np.stack(masks) if masks else np.zeros((0, size, size), np.float32)


def check_synthetic(model, preprocessing, spec: synthetic.SyntheticSpec, files, labels, probs,
                    pixels, threshold: float = 0.5, layer: str | None = None,
                    limit: int | None = None) -> Localisation:
    """Grad-CAM (malignant) of the malignant test images with p >= ``threshold`` (the first
    ``limit`` of them, if given), scored against their lesion masks. ``files`` are relative to
    the data root; ``pixels`` (N, S, S, 3) uint8 are the images as the model was fed them."""
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    indices = np.flatnonzero((labels == 1) & (probs >= threshold))[:limit]
    masks = masks_for(spec, [files[i] for i in indices], np.asarray(pixels).shape[1])
    heatmaps = gradcam(model, np.asarray(pixels)[indices], preprocessing, class_index=1,
                       layer=layer)
    summary = localisation(heatmaps, masks)
    control = localisation(heatmaps, np.roll(masks, 1, axis=0)) if len(masks) > 1 else {}
    summary.update(shuffled_mass_inside=control.get("mean_mass_inside", float("nan")),
                   layer=layer or "auto (top_activation)", threshold=float(threshold),
                   n_correct_malignant=len(indices))
    return Localisation(summary, indices, heatmaps, masks)
