"""The one way a config table becomes a frozen dataclass: declared fields, checked in one place.

Every table (``[data]``, ``[evaluation]``, ``[defaults]``/``[[variants]]``, ``[tune]`` and its
ranges, ``[report]``, ``[[ensembles]]``) is a dataclass whose fields carry their own rules:
the annotation types each scalar (``int``, ``float``, ``bool``, ``str``; ``X | None`` allows
None), ``_checked(default, check)`` attaches ``check(value) -> error text or None`` beside the
declaration, and ``_no_key`` marks fields that are not part of a model's cache key. ``_build``
applies them all; each failure is one UserError line naming the table and the key, with a
"did you mean" for unknown keys. Rules that involve several fields or a registry run after
``_build`` in the table's own parser.
"""
from __future__ import annotations

from dataclasses import field, fields

from melanoma.util.errors import UserError, unknown_name

_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def _no_key(default, **more):
    """A field that does NOT enter the model's cache key (names, notes, file pointers)."""
    return field(default=default, metadata={"key": False, **more})


def _checked(default, check, type_error: str | None = None, **more):
    """A field validated by ``check(value) -> error text or None`` (beside its declaration);
    ``type_error`` replaces "must be <type>" when the value has the wrong type."""
    return field(default=default, metadata={"check": check, "type_error": type_error, **more})


def one_of(choices: tuple[str, ...]):
    """A check: the value is one of ``choices``."""
    def check(value):
        return None if value in choices else f"must be one of {', '.join(map(repr, choices))}"
    return check


def _check_keys(table: dict, cls, where: str) -> None:
    known = {f.name for f in fields(cls)} - {"source", "overrides"}
    for key in table:
        if key not in known:
            raise unknown_name("key", key, sorted(known), where)


def _table(value, where: str) -> dict:
    """A copy of a TOML table / YAML mapping (None -> empty), or a UserError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table, got {value!r}")
    return dict(value)


def _build(cls, table: dict, where: str):
    """``cls(**table)`` with each scalar type-checked by its annotation and each field's own
    ``check`` run: every failure is one UserError line naming ``where`` and the key."""
    _check_keys(table, cls, where)
    table = dict(table)
    for f in fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        kind = _KINDS.get(annotation.removesuffix(" | None"))
        if kind and f.name in table and not (table[f.name] is None and "None" in annotation):
            table[f.name] = _typed(table[f.name], kind, where, f.name, f.metadata.get("type_error"))
    try:
        built = cls(**table)
    except TypeError as error:
        raise UserError(f"{where}: {error}") from None
    for f in fields(cls):
        check = f.metadata.get("check")
        problem = check(getattr(built, f.name)) if check else None
        if problem:
            raise UserError(f"{where}: {f.name} {problem}, got {getattr(built, f.name)!r}")
    return built


def _typed(value, kind, where: str, key: str, type_error: str | None = None):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: {key} {type_error or f'must be {kind.__name__}'}, got {value!r}")
    return value
