"""``--set KEY=VALUE`` overrides applied to a parsed config before it is validated.

    melanoma-bench run --set defaults.epochs=2 --set evaluation.tta=true
    melanoma-bench run --set variants.efficient_net_b0_native.learning_rate=3e-4

KEY is a dotted path into the config's tables (``variants.NAME.KEY`` or ``variants.INDEX.KEY``
for one row); VALUE is read as a TOML value (``2``, ``1e-4``, ``true``, ``[1, 2]``,
``"text"``), and as plain text when it is not one (``data.dir=/data/isic``). The result is
validated exactly like a file, so a typo gets the same one-line "did you mean" error.
"""
from __future__ import annotations

import copy
import tomllib

from melanoma.util.errors import UserError


def parse_value(text: str):
    """A TOML value, else the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def split_override(item: str) -> tuple[list[str], object]:
    """``"a.b=1"`` -> (["a", "b"], 1), or a UserError for a malformed item."""
    key, sep, value = item.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise UserError(f"--set expects KEY=VALUE with a dotted KEY (e.g. defaults.epochs=2), "
                        f"got {item!r}")
    return path, parse_value(value.strip())


def _child(node, part: str, item: str):
    if isinstance(node, list):  # [[variants]]: by name, else by index
        for row in node:
            if isinstance(row, dict) and row.get("name") == part:
                return row
        if part.isdigit() and int(part) < len(node):
            return node[int(part)]
        names = [row.get("name") for row in node if isinstance(row, dict)]
        raise UserError(f"--set {item}: no row {part!r}; rows: {', '.join(map(str, names))}")
    if not isinstance(node, dict):
        raise UserError(f"--set {item}: {part!r} is inside a value, not a table")
    return node.setdefault(part, {})


def apply(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of ``raw`` with every override applied in order (later ones win)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        path, value = split_override(item)
        node = raw
        for part in path[:-1]:
            node = _child(node, part, item)
        if not isinstance(node, dict):
            raise UserError(f"--set {item}: {'.'.join(path[:-1])} is not a table")
        node[path[-1]] = value
    return raw
