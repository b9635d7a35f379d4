"""The error galleries of a report: per variant the most confident missed melanomas and false
alarms (and a sample of detected melanomas), from the saved predictions and the data folder,
with Grad-CAM overlays where the variant's saved model is found.

    figures, fragment = gallery_section(out_dir, predictions, per_seed_rows, provenance,
                                        GallerySettings(k=6, data_root=None, models_dir=...))

Writes ``gallery_<variant>.png`` per variant; ``fragment`` is the page's section (it says
which variants have heat maps and why the others have none). TensorFlow is imported only
when a saved model is found (``explain.gradcam.saved_model_heatmaps``).
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.evaluation.metric_table import is_finite
from melanoma.reporting import galleries
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GallerySettings:
    """How many cases, where the images are (None: the run's data folder from its
    provenance) and where the saved models are (None: no Grad-CAM)."""

    k: int = 6
    data_root: Path | None = None
    models_dir: Path | None = None
    gradcam: bool = True


def _first_seed(predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each variant's predictions of its first seed, and that seed."""
    seeds = {name: int(g["seed"].iloc[0]) for name, g in predictions.groupby("variant", sort=False)}
    keep = predictions["seed"].to_numpy() == predictions["variant"].map(seeds).to_numpy()
    return predictions[keep], seeds


def _thresholds(per_seed: list[dict], seeds: dict[str, int]) -> dict[str, float]:
    """The validation-chosen threshold of each variant's shown seed (0.5 where none)."""
    out = {}
    for row in per_seed:
        if (row.get("test_set", "full") == "full" and seeds.get(row["variant"]) == row.get("seed")
                and is_finite(row.get("threshold"))):
            out[row["variant"]] = float(row["threshold"])
    return out


def _model_key(model_keys: dict, variant: str, seed: int) -> str | None:
    key = (model_keys or {}).get(variant)
    if isinstance(key, dict):  # several seeds: {seed: key} (JSON made the seeds strings)
        key = key.get(str(seed), key.get(seed))
    return key if isinstance(key, str) else None


def _file_maps(spec: dict, part: pd.DataFrame, root: Path) -> dict:
    """Grad-CAM from a model file ``evaluate`` scored (TensorFlow imported here only)."""
    from melanoma.explain.gradcam import file_model_heatmaps

    missed = part.loc[part["kind"] == "false_negative", "file"]
    return file_model_heatmaps(spec, list(part["file"]), root, missed)


def heat_maps(cases: pd.DataFrame, root: Path, settings: GallerySettings, model_keys: dict,
              seeds: dict[str, int], specs: dict | None = None) -> tuple[dict, dict[str, str]]:
    """(variant -> file -> heat map, variant -> why it has none); a variant evaluated from a
    model file (its spec names it) is drawn from that file."""
    maps, missing, by_key = {}, {}, {}  # by_key: one model under two names is loaded once
    for variant, part in cases.groupby("variant", sort=False):
        key = _model_key(model_keys, variant, seeds[variant])
        spec = (specs or {}).get(variant) or {}
        if not settings.gradcam:
            missing[variant] = "Grad-CAM off (report.gradcam = false)"
        elif spec.get("model_file") and spec.get("preprocessing"):
            try:
                maps[variant] = _file_maps(spec, part, root)
            except (UserError, ValueError) as error:
                missing[variant] = f"no Grad-CAM: {error}"
        elif settings.models_dir is None or not Path(settings.models_dir).is_dir():
            missing[variant] = "no models folder"
        elif key is None:
            missing[variant] = "no saved model recorded for it: ensembles and TTA rows have none"
        else:
            from melanoma.explain.gradcam import saved_model_heatmaps

            files = list(part["file"])
            found = by_key.get(key)
            if found is None or not set(files) <= set(found):
                missed = part.loc[part["kind"] == "false_negative", "file"]
                try:  # a missed melanoma: the evidence for benign, the class it was given
                    found = saved_model_heatmaps(settings.models_dir, key, files, root, missed)
                except (UserError, ValueError) as error:  # e.g. a model that is no CNN:
                    missing[variant] = f"no Grad-CAM: {error}"  # the report still completes
                    continue
                by_key[key] = found
            if found is None:
                missing[variant] = f"no saved model with key {key} in {settings.models_dir}"
            else:
                maps[variant] = {f: found[f] for f in files if f in found}
    return maps, missing


def _status(k: int, several_seeds: bool, maps: dict, missing: dict, root: Path) -> str:
    lines = [f"Per variant the {k} missed melanomas with the lowest probability, the {k} "
             f"benign images with the highest, and {k} detected melanomas drawn at random; "
             f"malignant iff p &ge; the variant's validation-chosen threshold. Images from "
             f"{html.escape(str(root))}."]
    if several_seeds:
        lines.append("Several seeds: each variant's first seed is shown.")
    if maps:
        lines.append("Grad-CAM of the class each image was given (last convolutional block; "
                     "red: most weight; each image above its overlay): for missed melanomas "
                     "the evidence for benign, for false alarms and detected melanomas the "
                     "evidence for malignant; from the saved models of: "
                     f"{html.escape(', '.join(maps))}.")
    empty = {v: (sum(1 for m in files.values() if not np.any(m > 0)), len(files))
             for v, files in maps.items()}
    if any(n for n, _ in empty.values()):
        counts = ", ".join(f"{html.escape(v)} {n} of {total}" for v, (n, total) in empty.items())
        lines.append(f"Empty maps (uniformly blue overlay): {counts}. Grad-CAM keeps only "
                     f"positive evidence for the class shown: a map is empty where the "
                     f"gradient-weighted features of the last block are negative everywhere.")
    reasons: dict[str, list[str]] = {}
    for variant, why in missing.items():
        reasons.setdefault(why, []).append(variant)
    for why, names in reasons.items():
        lines.append(f"No heat maps ({html.escape(why)}): {html.escape(', '.join(names))}.")
    return "".join(f"<p class='note'>{line}</p>" for line in lines)


def _folded(cases: pd.DataFrame, thumbs: dict, overlays: dict) -> str:
    """Each variant's gallery in a <details>, the first one open."""
    parts = []
    for i, (variant, part) in enumerate(cases.groupby("variant", sort=False)):
        counts = part["kind"].value_counts()
        summary = (f"{html.escape(str(variant))}: {counts.get('false_negative', 0)} missed "
                   f"melanomas, {counts.get('false_positive', 0)} false alarms, "
                   f"{counts.get('true_positive', 0)} detected"
                   + (", with Grad-CAM" if overlays.get(variant) else ""))
        parts.append(f"<details{' open' if i == 0 else ''}><summary>{summary}</summary>"
                     f"{galleries.gallery_html(part, thumbs, overlays, heading=3)}</details>")
    return "".join(parts)


def gallery_section(out_dir: Path, predictions: pd.DataFrame, per_seed: list[dict],
                    provenance: dict, settings: GallerySettings, specs: dict | None = None
                    ) -> tuple[list[tuple[Path, str]], str]:
    """(written gallery PNGs with captions, the page's HTML section); nothing when k is 0.
    ``specs``: the rows' specs (a model file's spec lets Grad-CAM load that file)."""
    if settings.k == 0:
        return [], ""
    head = "<h2>Error galleries</h2>"
    root = settings.data_root or (provenance.get("data") or {}).get("root")
    if not root or not Path(root).is_dir():
        return [], (f"{head}<p class='note'>No galleries: the images are not at "
                    f"{html.escape(str(root or 'an unrecorded folder'))} (rebuild with "
                    f"<code>melanoma-bench report RUN_DIR --data-dir DIR</code>).</p>")
    flat = sorted({r["variant"] for r in per_seed if r.get("degenerate")})
    shown, seeds = _first_seed(predictions[~predictions["variant"].isin(flat)])
    if shown.empty:
        return [], f"{head}{_no_gallery(flat)}"
    cases = galleries.select_cases(shown, settings.k, _thresholds(per_seed, seeds))
    thumbs = galleries.load_thumbnails(cases["file"], root)
    maps, missing = heat_maps(cases, Path(root), settings, provenance.get("model_keys") or {},
                              seeds, specs)
    overlays = {v: galleries.overlays_for(thumbs, m) for v, m in maps.items()}
    written = galleries.write_galleries(out_dir, cases, thumbs, overlays)
    log.info("galleries: %d variants, Grad-CAM for %d", len(written), len(maps))
    several = bool((predictions.groupby("variant")["seed"].nunique() > 1).any())
    return written, (head + _status(settings.k, several, maps, missing, Path(root))
                     + _no_gallery(flat) + _folded(cases, thumbs, overlays))


def _no_gallery(degenerate: list[str]) -> str:
    """The sentence for degenerate models (their "errors" are rounding), if any."""
    if not degenerate:
        return ""
    return (f"<p class='note'>No gallery for the degenerate models (their probabilities barely "
            f"vary, so which images they \"miss\" is rounding): "
            f"{html.escape(', '.join(degenerate))}.</p>")
