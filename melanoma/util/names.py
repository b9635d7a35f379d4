"""Names that become paths or appear in reports: one rule, one escaping, one confinement.

- ``check_safe_name``: a config value used as ONE path component (variant names, the
  config name, the tuner's project) must be letters, digits, ``.``, ``_``, ``-``.
- ``printable``/``relative_name``: file names as they appear in CSVs and reports (non-UTF-8
  bytes become ``\\xNN``), the same in ``run``, ``evaluate`` and ``audit``; text files are
  written with ``errors=ESCAPE_ERRORS``, which escapes such bytes the same way wherever a
  name ends up (a title, a spec, a cell), so no report crashes on a file-system name.
- ``confined``: every deletion target is proven to lie inside the folder the user named.
"""
from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

from melanoma.util.errors import UserError

SAFE_NAME_RULE = ("letters, digits, '.', '_' and '-' only, starting with a letter or digit "
                  "(no '/', no '..', at most 100 characters)")


def check_safe_name(value, what: str) -> str:
    """``value`` if it is safe to use as ONE path component (a folder or file name under a
    folder the user named), else a UserError stating the rule."""
    if (not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value)
            or ".." in value):
        raise UserError(f"{what} must be a safe name ({SAFE_NAME_RULE}), got {value!r}")
    return value


def confined(path, root):
    """``path`` resolved, if it lies strictly inside ``root`` (resolved); else a UserError.
    Every deletion goes through this, so nothing outside the folder the user named is touched."""
    path, root = Path(path).resolve(), Path(root).resolve()
    if path == root or root not in path.parents:
        raise UserError(f"refusing to touch {path}: it is not inside {root}")
    return path


ESCAPE_ERRORS = "melanoma-printable"


def _escape(error: UnicodeError):
    """Codec error handler: a byte that ``os.fsdecode`` kept as a lone surrogate is written
    as ``\\xNN`` (what ``printable`` gives); any other unencodable character as ``\\uNNNN``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else f"\\u{ord(c):04x}" for c in bad), error.end


codecs.register_error(ESCAPE_ERRORS, _escape)


def printable(path: str | os.PathLike) -> str:
    """A printable, UTF-8-encodable file name (non-UTF-8 bytes become ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def relative_name(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to the data ``root`` with forward slashes, printable."""
    try:
        return printable(Path(path).relative_to(root).as_posix())
    except ValueError:
        return printable(Path(path).as_posix())


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheet tools evaluate


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cell_safe(value):
    """A CSV text cell that a spreadsheet shows as text: one leading ``'`` before a cell
    starting with = + - @ tab or CR (a number such as -0.5 stays as it is), and before one
    already starting with ``'`` (so ``cell_read`` undoes it exactly); other values unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] == "'" or (value[0] in FORMULA_START and not _is_number(value)):
        return "'" + value
    return value


def cell_read(value):
    """The text ``cell_safe`` was given."""
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def csv_safe(frame):
    """A copy of a DataFrame whose text cells went through ``cell_safe``."""
    from pandas.api.types import is_numeric_dtype

    out = frame.copy()
    for column in out.columns:
        if not is_numeric_dtype(out[column]):  # text (object or str dtype): numbers never
            out[column] = out[column].map(cell_safe)
    return out


def markdown_cell(value):
    """Text that stays one cell of a Markdown table and shows as typed: ``|`` escaped, HTML
    special characters as entities, line breaks as spaces."""
    if not isinstance(value, str):
        return value
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\r", " ").replace("\n", " "))
