"""The ``[report]`` table and the ``[[ensembles]]`` list of a config.

    [report]
    gallery_cases = 6    # per variant: the k most confident missed melanomas and false alarms
                         # (and k true positives) as thumbnails; 0 turns the galleries off
    gradcam = true       # Grad-CAM overlays on them when the variant's saved model is found

    [[ensembles]]        # a row averaged from saved predictions: no training, no model
    name = "ensemble_mean"
    members = ["efficient_net_b0_samplewise", "efficient_net_b0_native"]
    method = "mean"      # or "geometric" (geometric mean of the malignant probabilities)

Both only change the report: they are not part of any model's cache key. No TensorFlow.
Each field's rule sits beside it (melanoma.config.schema).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from melanoma.config.schema import _build, _check_keys, _checked, _table
from melanoma.evaluation.ensembles import METHODS  # how members combine: declared once, there
from melanoma.util.errors import UserError, unknown_name
from melanoma.util.names import check_safe_name


def gallery_cases_check(value):
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else "must be an integer >= 0 (0: no galleries)"


def members_check(value):
    if not (isinstance(value, (list, tuple)) and all(isinstance(m, str) for m in value)):
        return "must be a list of variant names"
    if len(set(value)) < 2 or len(set(value)) != len(value):
        return "needs at least two distinct member variants"
    return None


@dataclass(frozen=True)
class ReportConfig:
    """What the report shows beyond the tables and figures."""

    # per variant and kind (false negatives, false positives); 0: none
    gallery_cases: int = _checked(6, gallery_cases_check, "must be an integer >= 0 (0: no galleries)")
    # heat maps on the gallery images when the saved model is found
    gradcam: bool = _checked(True, None, "must be true or false")


@dataclass(frozen=True)
class EnsembleConfig:
    """One ensemble row: ``method`` of the members' malignant probabilities, per image."""

    name: str
    members: tuple[str, ...] = _checked((), members_check)
    method: str = "mean"  # one of METHODS (checked with a "did you mean")


def _ensemble(entry, index: int, known: list[str]) -> EnsembleConfig:
    where = f"ensemble #{index + 1}"
    entry = _table(entry, f"config: {where}")
    _check_keys(entry, EnsembleConfig, where)
    if "name" not in entry:
        raise UserError(f"config: {where} has no name")
    name = check_safe_name(entry["name"], f"{where}: name")  # it names figure files
    where = f"ensemble {name!r}"
    if name in known:
        raise UserError(f"{where}: the name is already a variant or an earlier ensemble")
    ensemble = _build(EnsembleConfig, entry, where)
    for member in ensemble.members:
        if member not in known:
            raise unknown_name("member variant", member, known, where)
    if ensemble.method not in METHODS:
        raise unknown_name("ensemble method", ensemble.method, METHODS, where)
    return dataclasses.replace(ensemble, members=tuple(ensemble.members))


def parse_report(report_table, ensembles, variant_names) -> tuple[ReportConfig, tuple]:
    """(ReportConfig, (EnsembleConfig, ...)) from the raw ``[report]`` table and
    ``[[ensembles]]`` list; members are variant names or earlier ensembles' names."""
    if ensembles is None:
        ensembles = []
    if not isinstance(ensembles, list):
        raise UserError(f"config: ensembles must be a list of tables ([[ensembles]]), got "
                        f"{ensembles!r}")
    known, parsed = list(variant_names), []
    for index, entry in enumerate(ensembles):
        parsed.append(_ensemble(entry, index, known))
        known.append(parsed[-1].name)
    report = _build(ReportConfig, _table(report_table, "config: report"), "report")
    return report, tuple(parsed)
