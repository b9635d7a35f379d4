"""The leakage audit's files: audit_pairs.csv, audit_summary.json and the closest pairs
side by side (audit_pairs.png); ``run_audit`` finds, summarises and writes in one call (what
``melanoma-bench audit`` and ``run`` do). The finding is :mod:`melanoma.evaluation.audit`."""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
import pandas as pd
from PIL import Image

from melanoma.evaluation import audit
from melanoma.evaluation.audit.items import _IMAGE_ERRORS, LABEL_NAMES, PAIR_COLUMNS
from melanoma.evaluation.dedup import MIN_CORR
from melanoma.util.names import printable

# --------------------------------------------------------------------------
# outputs


def _atomic_write(path: pathlib.Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write via melanoma.util.atomic (temp file beside ``path``, then rename)."""
    from melanoma.util import atomic

    with atomic.atomic_open(path, "wb") as fh:
        write(fh)


def _thumb(path: str, size: int = 160) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im)
    except _IMAGE_ERRORS:
        return None


def _pair_caption(row) -> str:
    """'near r=0.982 ssim=0.91 rot90 LABEL CONFLICT' (scores absent for same_lesion)."""
    parts = [row.kind]
    if not math.isnan(row.bandpass_corr):
        parts.append(f"r={row.bandpass_corr:.3f} ssim={row.ssim:.2f}")
    if row.transform != "none":
        parts.append(row.transform)
    if row.group:
        parts.append(f"lesion {row.group}")
    if row.label_conflict:
        parts.append("LABEL CONFLICT")
    return " ".join(parts)


def _grid_figure(pairs: pd.DataFrame, max_grid: int):
    # Agg canvas attached explicitly: no pyplot, no global backend switch, no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # closest cross-split pairs first (pairs are sorted that way), then within-split
    shown = pairs.head(max_grid) if max_grid > 0 else pairs.head(0)
    if shown.empty:
        fig = Figure(figsize=(4, 2))
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        msg = "no duplicates found" if pairs.empty else f"{len(pairs)} pairs (grid disabled)"
        ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=14)
        FigureCanvasAgg(fig)
        return fig
    per_row = min(4, len(shown))
    n_rows = math.ceil(len(shown) / per_row)
    fig = Figure(figsize=(4.4 * per_row, 2.9 * n_rows + 0.4), layout="constrained")
    fig.suptitle(f"Closest duplicate pairs ({len(shown)} of {len(pairs)})")
    for k, row in enumerate(shown.itertuples(index=False)):
        r, c = divmod(k, per_row)
        for side in (0, 1):
            ax = fig.add_subplot(n_rows, 2 * per_row, r * 2 * per_row + 2 * c + side + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            path, split, label = ((row.file_a, row.split_a, row.label_a) if side == 0
                                  else (row.file_b, row.split_b, row.label_b))
            img = _thumb(path)
            if img is None:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
            else:
                ax.imshow(img)
            name = printable(pathlib.Path(path).name)  # fonts cannot draw undecodable bytes
            title = f"{split} / {LABEL_NAMES.get(int(label), label)}\n{name}"
            if side == 1:
                title = f"{_pair_caption(row)}\n" + title
                ax.title.set_color("red" if row.label_conflict else "black")
            else:
                title = "\n" + title
            ax.set_title(title, fontsize=7)
    FigureCanvasAgg(fig)
    return fig


def write_audit(
    pairs: pd.DataFrame,
    summary: dict[str, Any],
    out_dir: str | os.PathLike,
    max_grid: int = 16,
) -> dict[str, pathlib.Path]:
    """Write audit_pairs.csv, audit_summary.json and audit_pairs.png (atomically).

    The PNG shows up to ``max_grid`` pairs side by side, most similar cross-split
    pairs first, titled with split, label, kind and similarity (or says 'no
    duplicates found').  Returns {'csv': path, 'json': path, 'png': path}.
    """
    from melanoma.util import atomic

    out = atomic.make_folder(out_dir)
    paths = {"csv": out / "audit_pairs.csv", "json": out / "audit_summary.json",
             "png": out / "audit_pairs.png"}

    shown = pairs[list(PAIR_COLUMNS)].assign(file_a=pairs["file_a"].map(printable),
                                             file_b=pairs["file_b"].map(printable))
    csv_text = shown.to_csv(index=False)  # file names as in predictions.csv: \xNN escapes
    _atomic_write(paths["csv"], lambda fh: fh.write(csv_text.encode("utf-8")))
    json_text = json.dumps(summary, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(paths["json"], lambda fh: fh.write(json_text.encode("utf-8")))
    fig = _grid_figure(pairs, max_grid)
    _atomic_write(paths["png"], lambda fh: fig.savefig(fh, format="png", dpi=100))
    return paths


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (pathlib.Path, set, frozenset, tuple)):
        return str(obj) if isinstance(obj, pathlib.Path) else sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def run_audit(
    items: Sequence[Any],
    out_dir: str | os.PathLike,
    min_corr: float = MIN_CORR,
    *,
    include_flips: bool = False,
    max_grid: int = 16,
    **kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """find_duplicates + summarise + write_audit in one call (what the CLI runs)."""
    items = list(items)
    pairs = audit.find_duplicates(items, min_corr, include_flips=include_flips, **kwargs)
    summary = audit.summarise(pairs, items)
    write_audit(pairs, summary, out_dir, max_grid=max_grid)
    return pairs, summary
