"""Error galleries: per variant the most confident missed melanomas (false negatives), false
alarms (false positives) and a sample of true positives, as thumbnails with file name, label
and probability; optionally with Grad-CAM overlays. Pure numpy/PIL/matplotlib, no TensorFlow.

    cases = select_cases(predictions, k=6, threshold={"b0_native": 0.41})
    thumbs = load_thumbnails(cases["file"], data_root)
    overlays = {"b0_native": overlays_for(thumbs, {file: heatmap, ...})}   # optional
    written = write_galleries(out_dir, cases, thumbs, overlays)  # gallery_<variant>.png each
    fragment = gallery_html(cases, thumbs, overlays)             # <section>s for index.html

``overlays`` maps variant -> file -> uint8 RGB image (each variant has its own heat maps).
"""
from __future__ import annotations

import base64
import html
import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from melanoma.reporting import figures as plots
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)

KINDS = {  # kind -> heading; the order of rows in a gallery
    "false_negative": "Missed melanomas (false negatives), most confident first",
    "false_positive": "False alarms (false positives), most confident first",
    "true_positive": "Detected melanomas (true positives), a random sample",
}
SHORT = {"false_negative": "false negatives\n(missed melanomas)",
         "false_positive": "false positives\n(false alarms)",
         "true_positive": "true positives\n(sample)"}
CLASS_NAMES = ("Benign", "Malignant")
COLUMNS = ("variant", "kind", "rank", "file", "label", "prob_malignant", "threshold")
GALLERY_CSS = """
.gallery-row{display:flex;flex-wrap:wrap;gap:8px;margin:.3em 0 1em}
.gallery-row figure.thumb{width:150px;margin:0;display:block}
.gallery-row figure.thumb img{width:150px;height:auto;max-width:100%;border:1px solid #ccc}
.gallery-row figcaption{font-size:11px;overflow-wrap:anywhere;line-height:1.25}
.gallery-row .missing{width:150px;height:150px;background:#eee;color:#777;font-size:11px;
 display:flex;align-items:center;justify-content:center;text-align:center}
"""


def _threshold(threshold, variant: str) -> float:
    value = threshold.get(variant, 0.5) if isinstance(threshold, dict) else threshold
    if value is None or not math.isfinite(float(value)):
        return 0.5  # no validation-chosen threshold for this variant: argmax
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"gallery threshold for {variant!r} must lie in [0, 1], got {value}")
    return float(value)


def _check(predictions: pd.DataFrame, k: int) -> None:
    missing = [c for c in ("variant", "file", "label", "prob_malignant")
               if c not in predictions.columns]
    if missing:
        raise UserError(f"predictions lack the column(s) {', '.join(missing)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise UserError(f"the number of gallery images per kind must be an integer >= 0, got {k!r}")


def _descending(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["prob_malignant", "file"], ascending=[False, True], kind="mergesort")


def select_cases(predictions: pd.DataFrame, k: int = 6, threshold: float | dict = 0.5,
                 n_true_positives: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Per variant: the ``k`` false negatives with the lowest probability, the ``k`` false
    positives with the highest, and ``n_true_positives`` (default ``k``) true positives drawn
    at random (seeded), highest probability first. Malignant iff p >= the variant's threshold
    (a number, or a dict variant -> threshold, e.g. the validation-chosen ones; 0.5 where
    missing or undefined). Ties go by file name, so the choice is deterministic."""
    _check(predictions, k)
    n_tp = k if n_true_positives is None else n_true_positives
    _check(predictions, n_tp)
    picked = []
    for index, (variant, group) in enumerate(predictions.groupby("variant", sort=False)):
        t = _threshold(threshold, variant)
        group = group.sort_values(["prob_malignant", "file"], kind="mergesort")
        positive = group["prob_malignant"].to_numpy() >= t
        malignant = group["label"].to_numpy() == 1
        tp = group[positive & malignant]
        rng = np.random.default_rng([seed, index])
        sample = tp.iloc[np.sort(rng.choice(len(tp), size=min(n_tp, len(tp)), replace=False))]
        for kind, rows in (("false_negative", group[~positive & malignant].head(k)),
                           ("false_positive", _descending(group[positive & ~malignant]).head(k)),
                           ("true_positive", _descending(sample))):
            picked.append(rows.assign(variant=variant, kind=kind, rank=np.arange(1, len(rows) + 1),
                                      threshold=t))
    if not picked:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(picked, ignore_index=True).loc[:, list(COLUMNS)]


def load_thumbnails(files, root: str | Path, size: int = 160) -> dict[str, np.ndarray]:
    """file -> uint8 RGB thumbnail (longer side ``size``) for the files found under ``root``;
    files that are missing, unreadable or outside ``root`` are left out (logged)."""
    root, thumbs = Path(root).resolve(), {}
    for file in dict.fromkeys(files):
        path = (root / file).resolve()
        if root not in path.parents:
            log.warning("gallery: %s is not inside %s, not shown", file, root)
            continue
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((size, size), Image.Resampling.LANCZOS)
                thumbs[file] = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as error:
            log.warning("gallery: %s not shown (%s)", file, str(error).splitlines()[0][:120])
    return thumbs


def overlay(image, heatmap, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """``heatmap`` (h, w) in [0, 1] coloured by ``cmap`` over the uint8 RGB ``image``
    (resized to it, bilinear), ``alpha`` weighting the colours: uint8 (H, W, 3)."""
    from matplotlib import colormaps

    image = np.asarray(image)
    heat = np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0)
    if heat.shape != image.shape[:2]:
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(
            (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR))
    colours = colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image[..., :3].astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def overlays_for(thumbnails: dict, heatmaps: dict, alpha: float = 0.45) -> dict:
    """file -> overlay of its heat map on its thumbnail, for the files that have both."""
    return {f: overlay(thumbnails[f], h, alpha) for f, h in heatmaps.items() if f in thumbnails}


def caption(row) -> str:
    """``name.jpg`` / ``Malignant, p=0.973`` for one selected case."""
    return f"{Path(str(row.file)).name}\n{CLASS_NAMES[int(row.label)]}, p={row.prob_malignant:.4f}"


def _cell(ax, image, text: str, font: float) -> None:
    if image is None:
        ax.set_facecolor("#eeeeee")
        ax.text(0.5, 0.5, "image not\navailable", ha="center", va="center", fontsize=font,
                color="#777777", transform=ax.transAxes)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(text, fontsize=font, pad=2)


def gallery_figure(cases: pd.DataFrame, thumbnails: dict, path: Path,
                   overlays: dict | None = None, title: str | None = None) -> Path:
    """One variant's gallery as a PNG: a row of thumbnails per kind (with, when ``overlays``
    holds any of them, a row of Grad-CAM overlays beneath). Returns ``path``."""
    variants = list(dict.fromkeys(cases["variant"]))
    if len(variants) > 1:
        raise UserError(f"gallery_figure draws one variant, got {variants}")
    overlays = overlays or {}
    rows = []  # (kind, rows of that kind, show overlays)
    for kind in KINDS:
        part = cases[cases["kind"] == kind]
        if len(part):
            rows.append((kind, part, any(f in overlays for f in part["file"])))
    n_cols = max([len(part) for _, part, _ in rows] + [1])
    n_rows = sum(2 if with_overlay else 1 for *_, with_overlay in rows) or 1
    height = 2.05 * n_rows + 0.5
    fig = Figure(figsize=(1.75 * n_cols + 0.3, height))
    grid = fig.add_gridspec(n_rows, n_cols, hspace=0.4, wspace=0.08, top=1 - 0.55 / height,
                            bottom=0.1 / height)
    r = 0
    for kind, part, with_overlay in rows:
        for sources in ((thumbnails, ""),) + (((overlays, "Grad-CAM: "),) if with_overlay else ()):
            for c, row in enumerate(part.itertuples()):
                ax = fig.add_subplot(grid[r, c])
                _cell(ax, sources[0].get(row.file), caption(row), 7.5)
                if c == 0:
                    ax.set_ylabel(sources[1] + SHORT[kind], fontsize=8.5, weight="bold")
            r += 1
    threshold = f" (malignant iff p ≥ {cases['threshold'].iloc[0]:.4f})" if len(cases) else ""
    fig.suptitle(title or f"{variants[0] if variants else ''}: most confident errors{threshold}",
                 fontsize=10, y=1 - 0.08 / height)
    return plots.save_figure(fig, Path(path))


def write_galleries(out_dir: Path, cases: pd.DataFrame, thumbnails: dict,
                    overlays: dict | None = None) -> list[tuple[Path, str]]:
    """``gallery_<variant>.png`` per variant in ``out_dir``: (path, caption) of each.
    ``overlays``: variant -> file -> uint8 RGB (Grad-CAM over the thumbnail), optional."""
    written = []
    for variant, part in cases.groupby("variant", sort=False):
        path = Path(out_dir) / f"gallery_{plots.slug(variant)}.png"
        counts = part["kind"].value_counts()
        text = ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}s" for k in KINDS)
        mine = (overlays or {}).get(variant, {})
        text += ", with Grad-CAM" if mine else ""
        written.append((gallery_figure(part, thumbnails, path, mine),
                        f"{variant}: error gallery ({text})"))
    return written


def data_uri(image: np.ndarray, quality: int = 88) -> str:
    """A uint8 RGB array as a base64 JPEG data URI (photographs: far smaller than PNG)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG",
                                                            quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_html(row, thumbnails: dict, overlays: dict) -> str:
    name = html.escape(str(row.file))
    images = []
    for source, label in ((thumbnails, "image"), (overlays, "Grad-CAM")):
        if row.file in source:
            images.append(f'<img src="{data_uri(source[row.file])}" alt="{label}: {name}">')
    if not images:
        images.append('<div class="missing">image not available</div>')
    return (f'<figure class="thumb" title="{name}">{"".join(images)}<figcaption>{name}<br>'
            f"{CLASS_NAMES[int(row.label)]}, p={row.prob_malignant:.4f}</figcaption></figure>")


def gallery_html(cases: pd.DataFrame, thumbnails: dict, overlays: dict | None = None,
                 heading: int = 3) -> str:
    """An HTML fragment (add ``GALLERY_CSS`` to the page's style): per variant a heading and
    a wrapping row of figures per kind, images embedded as base64; file names escaped.
    ``overlays``: variant -> file -> uint8 RGB, optional."""
    overlays, parts = overlays or {}, []
    for variant, part in cases.groupby("variant", sort=False):
        mine = overlays.get(variant, {})
        threshold = float(part["threshold"].iloc[0])
        parts.append(f'<section class="gallery"><h{heading}>{html.escape(str(variant))} '
                     f"<small>(malignant iff p &ge; {threshold:.4f})</small></h{heading}>")
        for kind, heading_text in KINDS.items():
            rows = part[part["kind"] == kind]
            parts.append(f"<h{heading + 1}>{html.escape(heading_text)} ({len(rows)})"
                         f"</h{heading + 1}>")
            figures = "".join(_figure_html(r, thumbnails, mine) for r in rows.itertuples())
            parts.append(f'<div class="gallery-row">{figures or "<p>none</p>"}</div>')
        parts.append("</section>")
    return "".join(parts)
