"""Diagnoses -> Benign / Malignant / excluded: one explicit, printable class mapping.

Every importer turns its source's labels into one of :data:`DIAGNOSES` (HAM10000's ``mel``
and ISIC 2019's ``MEL`` both become ``melanoma``); this module decides what each becomes.
Default: Malignant = melanoma; the other malignant or pre-malignant diagnoses (basal cell
carcinoma, actinic keratosis / Bowen's disease, squamous cell carcinoma) and ISIC 2019's
"none of the others" are excluded, because calling them Benign would be wrong and calling them
Malignant changes the task; ``malignant=("melanoma", "bcc", "akiec", "scc")`` maps them instead.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from melanoma.util.errors import UserError, unknown_name

# name -> what it is (and where it comes from)
DIAGNOSES: dict[str, str] = {
    "melanoma": "melanoma (all sources; ISIC 2016's 'malignant', ISIC 2020's target 1)",
    "nevus": "melanocytic nevus",
    "seborrheic_keratosis": "seborrheic keratosis",
    "nevus_or_seborrheic_keratosis": "ISIC 2017 'not melanoma' when the file has no "
                                     "seborrheic_keratosis column",
    "benign": "ISIC 2016 'benign' (not melanoma; diagnosis not given)",
    "bkl": "benign keratosis-like lesion (seborrheic keratosis, solar lentigo, lichen planus-like)",
    "df": "dermatofibroma",
    "vasc": "vascular lesion",
    "lentigo_nos": "lentigo, not otherwise specified (ISIC 2020)",
    "lichenoid_keratosis": "lichenoid keratosis (ISIC 2020)",
    "solar_lentigo": "solar lentigo (ISIC 2020)",
    "cafe_au_lait_macule": "cafe-au-lait macule (ISIC 2020)",
    "atypical_melanocytic_proliferation": "atypical melanocytic proliferation (ISIC 2020, benign)",
    "unknown_benign": "ISIC 2020 'unknown' diagnosis, labelled benign",
    "bcc": "basal cell carcinoma (malignant, not melanoma)",
    "akiec": "actinic keratosis / intraepithelial carcinoma, Bowen's disease (ISIC 'AK')",
    "scc": "squamous cell carcinoma (malignant, not melanoma)",
    "unknown": "ISIC 2019 'UNK': none of the other classes",
}
DEFAULT_MALIGNANT = ("melanoma",)
DEFAULT_EXCLUDED = ("akiec", "bcc", "scc", "unknown")
CLASSES = ("Benign", "Malignant")


@dataclass(frozen=True)
class ClassMapping:
    """Which diagnoses are Malignant, which Benign, which left out (disjoint, all known)."""

    malignant: tuple[str, ...]
    benign: tuple[str, ...]
    excluded: tuple[str, ...]

    def label(self, diagnosis: str) -> str | None:
        """'Malignant', 'Benign', or None when the diagnosis is excluded."""
        if diagnosis in self.malignant:
            return "Malignant"
        if diagnosis in self.benign:
            return "Benign"
        if diagnosis in self.excluded:
            return None
        raise unknown_name("diagnosis", diagnosis, DIAGNOSES)

    def describe(self, present: Iterable[str] | None = None) -> str:
        """One line: 'Malignant <- ...; Benign <- ...; excluded: ...' (only ``present`` ones
        when given, so the line fits what was imported)."""
        keep = set(DIAGNOSES if present is None else present)
        part = lambda names: ", ".join(n for n in names if n in keep) or "(none)"
        return (f"Malignant <- {part(self.malignant)}; Benign <- {part(self.benign)}; "
                f"excluded: {part(self.excluded)}")

    def to_dict(self) -> dict[str, list[str]]:
        return {"malignant": list(self.malignant), "benign": list(self.benign),
                "excluded": list(self.excluded)}


def _names(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        name = str(v).strip().lower()
        if name not in DIAGNOSES:
            raise unknown_name(f"diagnosis in {what}", v, DIAGNOSES)
        out.append(name)
    return tuple(dict.fromkeys(out))


def class_mapping(malignant: Iterable[str] = DEFAULT_MALIGNANT,
                  exclude: Iterable[str] | None = None) -> ClassMapping:
    """The mapping: ``malignant`` diagnoses -> Malignant, ``exclude`` left out (default
    :data:`DEFAULT_EXCLUDED` less any named malignant), every other diagnosis -> Benign."""
    mal = _names(malignant, "malignant")
    if not mal:
        raise UserError("the class mapping needs at least one malignant diagnosis")
    if exclude is None:
        exc = tuple(d for d in DEFAULT_EXCLUDED if d not in mal)
    else:
        exc = _names(exclude, "exclude")
        both = sorted(set(mal) & set(exc))
        if both:
            raise UserError(f"diagnosis {', '.join(both)} is both malignant and excluded; "
                            "name it in one of the two")
    benign = tuple(d for d in DIAGNOSES if d not in mal and d not in exc)
    return ClassMapping(mal, benign, exc)
