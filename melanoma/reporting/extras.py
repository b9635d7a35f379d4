"""What a report adds to the trained variants' rows: ensembles and error galleries, set by
the run's config (``[report]``, ``[[ensembles]]``, saved in results.json's provenance) or by
``melanoma-bench report`` flags on top of it.

    options = ReportOptions(data_root=Path("data"), models_dir=Path("models"))
    test, val, specs = add_ensembles(test, val, specs, provenance, options)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from melanoma.config.report import parse_report
from melanoma.evaluation import ensembles as ens
from melanoma.reporting.gallery_section import GallerySettings


@dataclass(frozen=True)
class ReportOptions:
    """Per report (not per run): where the images and saved models are, and overrides."""

    data_root: Path | None = None  # None: the run's data folder (provenance data.root)
    models_dir: Path | None = None  # None: provenance models_dir if recorded, else no Grad-CAM
    gallery_cases: int | None = None  # None: the config's report.gallery_cases
    ensembles: tuple = field(default_factory=tuple)  # more [[ensembles]] entries (dicts)


def _config(provenance: dict) -> dict:
    config = provenance.get("config")
    return config if isinstance(config, dict) else {}


def ensembles_of(provenance: dict, options: ReportOptions, variants) -> tuple:
    """The run config's ensembles then the options', validated against ``variants`` and the
    config's variants (``run --variant`` may have left some out: with_ensembles skips those)."""
    config = _config(provenance)
    entries = list(config.get("ensembles") or []) + list(options.ensembles)
    listed = [v.get("name") for v in config.get("variants") or () if isinstance(v, dict)]
    # the config's ensembles were checked against all its variants when it was loaded; a run
    # of some of them (--variant) records only those, so their members count as known here
    members = [m for e in config.get("ensembles") or () if isinstance(e, dict)
               for m in e.get("members") or () if isinstance(m, str)]
    known = list(dict.fromkeys([*variants, *filter(None, listed), *members]))
    return parse_report(None, entries, known)[1]


def add_ensembles(test, val, specs: dict, provenance: dict, options: ReportOptions):
    """(test, val, specs) with the ensembles' rows and specs added (unchanged without)."""
    entries = ensembles_of(provenance, options, test["variant"])
    if not entries:
        return test, val, specs
    specs = {**specs, **{e.name: {"spec": ens.describe(e), "note": "ensemble"} for e in entries}}
    return ens.with_ensembles(test, entries), ens.with_ensembles(val, entries), specs


def gallery_settings(provenance: dict, options: ReportOptions) -> GallerySettings:
    """The config's [report] table (defaults for runs without one) and the options."""
    report = parse_report(_config(provenance).get("report"), None, [])[0]
    models = options.models_dir or provenance.get("models_dir")
    return GallerySettings(
        k=report.gallery_cases if options.gallery_cases is None else options.gallery_cases,
        data_root=options.data_root, models_dir=Path(models) if models else None,
        gradcam=report.gradcam)
