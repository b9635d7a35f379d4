"""Ground-truth files of the public dermoscopy data sets -> one row per image with a diagnosis.

Formats (column names compared ignoring case; the format is detected from the header):

=============  ==========================================================  ===============
name           columns                                                     group (one id
                                                                           per lesion/
                                                                           patient)
=============  ==========================================================  ===============
isic2016       ``image,label`` (benign/malignant or 0/1); the official       none
               files have no header: ``ISIC_0000000,benign``
isic2017       ``image_id,melanoma[,seborrheic_keratosis]`` (0/1)           none
isic2018       ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` one-hot                none
isic2019       ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`` one-hot          none
isic2020       ``image_name,patient_id,...,[diagnosis,]benign_malignant,    patient_id
               target``
ham10000       ``HAM10000_metadata.csv``: ``lesion_id,image_id,dx,...``      lesion_id
=============  ==========================================================  ===============

Each parser returns a DataFrame with ``image_id, diagnosis, group_id, line`` (``line``: the
row's line number in the file, header = line 1); a value it does not know is a UserError
that names the first few lines.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from melanoma.data.importers.mapping import DIAGNOSES
from melanoma.util.errors import UserError, unknown_name

ONE_HOT = {"mel": "melanoma", "nv": "nevus", "bcc": "bcc", "ak": "akiec", "akiec": "akiec",
           "bkl": "bkl", "df": "df", "vasc": "vasc", "scc": "scc", "unk": "unknown"}
HAM_DX = {"mel": "melanoma", "nv": "nevus", "bcc": "bcc", "akiec": "akiec", "bkl": "bkl",
          "df": "df", "vasc": "vasc"}
_ISIC_ID = re.compile(r"ISIC_\d+")
_TRUE, _FALSE = {"1", "1.0", "true"}, {"0", "0.0", "false"}


def bad_rows(source: str, lines, what: str) -> UserError:
    """The one-line error for rows of ``source`` that cannot be read: first 5 line numbers."""
    lines = list(lines)
    shown = ", ".join(str(n) for n in lines[:5])
    more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
    return UserError(f"{source}: {what} on line{'s' if len(lines) > 1 else ''} {shown}{more}")


def _flag(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    """A 0/1 column as bool; anything else is an error naming the lines."""
    v = df[col].str.strip().str.lower()
    ok = v.isin(_TRUE | _FALSE)
    if not ok.all():
        raise bad_rows(source, df.loc[~ok, "line"], f"column {col!r} is not 0/1")
    return v.isin(_TRUE)


def _rows(df: pd.DataFrame, ids: pd.Series, diagnosis, group: pd.Series | None = None) -> pd.DataFrame:
    return pd.DataFrame({"image_id": ids.str.strip().to_numpy(), "diagnosis": list(diagnosis),
                         "group_id": [""] * len(df) if group is None else group.str.strip().to_numpy(),
                         "line": df["line"].to_numpy()})


def parse_isic2016(df: pd.DataFrame, source: str) -> pd.DataFrame:
    v = df["label"].str.strip().str.lower()
    known = {"malignant": "melanoma", "benign": "benign", **{t: "melanoma" for t in _TRUE},
             **{f: "benign" for f in _FALSE}}
    bad = ~v.isin(known)
    if bad.any():
        raise bad_rows(source, df.loc[bad, "line"], "unknown label (expected benign/malignant or 0/1)")
    return _rows(df, df["image"], v.map(known))


def parse_isic2017(df: pd.DataFrame, source: str) -> pd.DataFrame:
    mel = _flag(df, "melanoma", source)
    if "seborrheic_keratosis" not in df:
        return _rows(df, df["image_id"], mel.map({True: "melanoma", False: "nevus_or_seborrheic_keratosis"}))
    sk = _flag(df, "seborrheic_keratosis", source)
    if (mel & sk).any():
        raise bad_rows(source, df.loc[mel & sk, "line"], "both melanoma and seborrheic_keratosis are 1")
    diag = ["melanoma" if m else "seborrheic_keratosis" if s else "nevus" for m, s in zip(mel, sk)]
    return _rows(df, df["image_id"], diag)


def parse_one_hot(df: pd.DataFrame, source: str) -> pd.DataFrame:
    cols = [c for c in df.columns if c in ONE_HOT]
    flags = pd.DataFrame({c: _flag(df, c, source) for c in cols})
    n_set = flags.sum(axis=1)
    if (n_set != 1).any():
        raise bad_rows(source, df.loc[n_set != 1, "line"], f"not exactly one of {', '.join(cols)} is 1")
    return _rows(df, df["image"], [ONE_HOT[c] for c in flags.idxmax(axis=1)])


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def parse_isic2020(df: pd.DataFrame, source: str) -> pd.DataFrame:
    if "target" not in df and "benign_malignant" not in df:
        raise UserError(f"{source}: an ISIC 2020 file needs a 'target' or 'benign_malignant' column")
    if "target" in df:
        malignant = _flag(df, "target", source)
    else:
        bm = df["benign_malignant"].str.strip().str.lower()
        if not bm.isin({"benign", "malignant"}).all():
            raise bad_rows(source, df.loc[~bm.isin({"benign", "malignant"}), "line"],
                           "benign_malignant is not benign/malignant")
        malignant = bm == "malignant"
    if "diagnosis" in df:
        diag = df["diagnosis"].map(_normal)
        diag = diag.where(diag != "unknown", malignant.map({True: "unknown_malignant", False: "unknown_benign"}))
        diag = diag.where(diag != "", malignant.map({True: "melanoma", False: "unknown_benign"}))
    else:
        diag = malignant.map({True: "melanoma", False: "unknown_benign"})
    conflict = (diag == "melanoma") != malignant
    if conflict.any():
        raise bad_rows(source, df.loc[conflict, "line"], "diagnosis and target disagree about melanoma")
    return _rows(df, df["image_name"], diag, df["patient_id"])


def parse_ham10000(df: pd.DataFrame, source: str) -> pd.DataFrame:
    dx = df["dx"].str.strip().str.lower()
    return _rows(df, df["image_id"], dx.map(lambda d: HAM_DX.get(d, d)), df["lesion_id"])


@dataclass(frozen=True)
class SourceFormat:
    """A ground-truth format: the columns that identify it and its parser."""

    name: str
    required: tuple[str, ...]
    parse: Callable[[pd.DataFrame, str], pd.DataFrame]
    group: str | None = None  # the column that holds the lesion or patient id


# order matters for detection: the most specific header first
FORMATS: dict[str, SourceFormat] = {f.name: f for f in (
    SourceFormat("ham10000", ("lesion_id", "image_id", "dx"), parse_ham10000, "lesion_id"),
    SourceFormat("isic2020", ("image_name", "patient_id"), parse_isic2020, "patient_id"),
    SourceFormat("isic2019", ("image", "mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc"), parse_one_hot),
    SourceFormat("isic2018", ("image", "mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"), parse_one_hot),
    SourceFormat("isic2017", ("image_id", "melanoma"), parse_isic2017),
    SourceFormat("isic2016", ("image", "label"), parse_isic2016),
)}


def _read_csv(path: Path) -> pd.DataFrame:
    """All cells as stripped strings, lower-case column names, and each row's line number."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline().strip().split(",")
        headerless = len(first) == 2 and bool(_ISIC_ID.fullmatch(first[0].strip()))
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         header=None if headerless else "infer",
                         names=["image", "label"] if headerless else None)
    except FileNotFoundError:
        raise UserError(f"labels file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"cannot read labels file {path}: {str(exc).splitlines()[0]}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    df["line"] = df.index + (1 if headerless else 2)
    if df.empty:
        raise UserError(f"labels file {path} has no rows")
    return df


def detect_format(columns) -> SourceFormat | None:
    """The first format whose identifying columns are all present, or None."""
    cols = {str(c).strip().lower() for c in columns}
    return next((f for f in FORMATS.values() if set(f.required) <= cols), None)


def read_labels(path: str | Path, source_format: str | None = None) -> tuple[pd.DataFrame, str]:
    """Rows (image_id, diagnosis, group_id, label_source) of one ground-truth file, and the
    format's name (``source_format``, or detected from the header when None or 'auto')."""
    path = Path(path)
    df = _read_csv(path)
    if source_format in (None, "auto"):
        fmt = detect_format(df.columns)
        if fmt is None:
            known = "; ".join(f"{f.name} ({','.join(f.required)})" for f in FORMATS.values())
            raise UserError(f"cannot tell the format of {path.name} from its header "
                            f"({','.join(c for c in df.columns if c != 'line')}); known: {known}")
    else:
        if source_format not in FORMATS:
            raise unknown_name("source format", source_format, FORMATS)
        fmt = FORMATS[source_format]
        missing = [c for c in fmt.required if c not in df.columns]
        if missing:
            raise UserError(f"{path.name} lacks the {fmt.name} column(s) {', '.join(missing)}")
    rows = fmt.parse(df, path.name)
    unknown = ~rows["diagnosis"].isin(DIAGNOSES)
    if unknown.any():
        values = ", ".join(sorted(map(repr, rows.loc[unknown, "diagnosis"].unique()))[:5])
        raise bad_rows(path.name, rows.loc[unknown, "line"], f"unknown label {values}")
    empty = rows["image_id"] == ""
    if empty.any():
        raise bad_rows(path.name, rows.loc[empty, "line"], "empty image id")
    dup = rows["image_id"].duplicated(keep=False)
    if dup.any():
        raise bad_rows(path.name, rows.loc[dup, "line"], "image id listed more than once")
    rows["label_source"] = [f"{path.name}:{n}" for n in rows["line"]]
    return rows.drop(columns="line"), fmt.name
