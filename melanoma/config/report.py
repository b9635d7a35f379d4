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
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from melanoma.util.errors import UserError, unknown_name
from melanoma.util.names import check_safe_name

METHODS = ("mean", "geometric")  # evaluation.ensembles.METHODS (that module needs pandas)


@dataclass(frozen=True)
class ReportConfig:
    """What the report shows beyond the tables and figures."""

    gallery_cases: int = 6  # per variant and kind (false negatives, false positives); 0: none
    gradcam: bool = True  # heat maps on the gallery images when the saved model is found


@dataclass(frozen=True)
class EnsembleConfig:
    """One ensemble row: ``method`` of the members' malignant probabilities, per image."""

    name: str
    members: tuple[str, ...]
    method: str = "mean"


def _report(table) -> ReportConfig:
    if table is None:
        return ReportConfig()
    if not isinstance(table, dict):
        raise UserError(f"config: report must be a table, got {table!r}")
    known = [f.name for f in fields(ReportConfig)]
    for key in table:
        if key not in known:
            raise unknown_name("key", key, known, "report")
    cases = table.get("gallery_cases", ReportConfig.gallery_cases)
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 0:
        raise UserError(f"report: gallery_cases must be an integer >= 0 (0: no galleries), "
                        f"got {cases!r}")
    gradcam = table.get("gradcam", ReportConfig.gradcam)
    if not isinstance(gradcam, bool):
        raise UserError(f"report: gradcam must be true or false, got {gradcam!r}")
    return ReportConfig(gallery_cases=cases, gradcam=gradcam)


def _ensemble(entry, index: int, known: list[str]) -> EnsembleConfig:
    where = f"ensemble #{index + 1}"
    if not isinstance(entry, dict):
        raise UserError(f"config: {where} must be a table, got {entry!r}")
    for key in entry:
        if key not in ("name", "members", "method"):
            raise unknown_name("key", key, ["name", "members", "method"], where)
    if "name" not in entry:
        raise UserError(f"config: {where} has no name")
    name = check_safe_name(entry["name"], f"{where}: name")  # it names figure files
    where = f"ensemble {name!r}"
    if name in known:
        raise UserError(f"{where}: the name is already a variant or an earlier ensemble")
    members = entry.get("members")
    if not (isinstance(members, (list, tuple)) and all(isinstance(m, str) for m in members)):
        raise UserError(f"{where}: members must be a list of variant names, got {members!r}")
    if len(set(members)) < 2 or len(set(members)) != len(members):
        raise UserError(f"{where}: needs at least two distinct member variants, got {members}")
    for member in members:
        if member not in known:
            raise unknown_name("member variant", member, known, where)
    method = entry.get("method", "mean")
    if method not in METHODS:
        raise unknown_name("ensemble method", method, METHODS, where)
    return EnsembleConfig(name, tuple(members), method)


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
    return _report(report_table), tuple(parsed)
