"""An output folder holds one experiment's report: another run never replaces it by accident.

    identity = run_identity(cfg.to_dict(), data_fingerprint)
    check_owner(out_dir, identity, overwrite=False)   # UserError if out_dir holds another's

A report's identity is what its numbers depend on: the config's content (every key, the
data limit included; not the file name it was read from nor how ``--set`` spelled it) and
the data set (its fingerprint: files, bytes and labels). It is stored in results.json's
provenance (``output_of``). Rerunning the same command finds the same identity, so it
resumes and rewrites its own report; another config, data set or limit is refused with
one line naming ``--out`` and ``--overwrite``, before anything is trained or written.
"""
from __future__ import annotations

import json
from pathlib import Path

from melanoma.util import atomic
from melanoma.util.errors import UserError

FIELD = "output_of"  # in results.json's provenance
_NOT_CONTENT = ("source", "overrides")  # how the config was given, not what it says


def _plain(value):
    """``value`` as results.json stores it (tuples as lists, NaN as null, paths as text)."""
    return json.loads(json.dumps(atomic._nan_to_none(value), default=str))


def run_identity(config: dict, data: str | dict | None) -> dict:
    """{"config": the config's content, "data": the data set's fingerprint (or, where none
    is computed, its root and size)}."""
    content = {k: v for k, v in config.items() if k not in _NOT_CONTENT}
    return _plain({"config": content, "data": data})


def saved_identity(provenance: dict) -> dict:
    """The identity a results.json's provenance records (derived from its config and data
    fingerprint when it was written before identities were stored)."""
    if isinstance(provenance.get(FIELD), dict):
        return provenance[FIELD]
    data = provenance.get("data") or {}
    return run_identity(provenance.get("config") or {}, data.get("fingerprint"))


def _differences(old: dict, new: dict) -> list[str]:
    parts = []
    old_cfg, new_cfg = old.get("config") or {}, new.get("config") or {}
    if old_cfg.get("name") != new_cfg.get("name"):
        parts.append(f"config {old_cfg.get('name')!r}, now {new_cfg.get('name')!r}")
    old_limit = (old_cfg.get("data") or {}).get("limit")
    new_limit = (new_cfg.get("data") or {}).get("limit")
    if old_limit != new_limit:
        parts.append(f"limit {old_limit}, now {new_limit}")
    if not parts and old_cfg != new_cfg:
        keys = sorted(k for k in {*old_cfg, *new_cfg} if old_cfg.get(k) != new_cfg.get(k))
        parts.append(f"other config settings ({', '.join(keys)})")
    if old.get("data") != new.get("data"):
        parts.append(f"data set {_data_text(old.get('data'))}, now {_data_text(new.get('data'))}")
    return parts


def _data_text(data) -> str:
    if isinstance(data, dict):
        return f"{data.get('root')} ({data.get('n_test')} test images)"
    return f"fingerprint {data}"


def check_owner(out_dir: Path, identity: dict, overwrite: bool) -> None:
    """Nothing when ``out_dir`` holds no report, the same experiment's, or ``overwrite``;
    else a UserError naming what differs, ``--out`` and ``--overwrite``."""
    path = Path(out_dir) / "results.json"
    if overwrite or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        provenance = saved.get("provenance") or {}
    except (OSError, ValueError, AttributeError):
        provenance = None
    if provenance is not None and saved_identity(provenance) == identity:
        return
    what = ("; ".join(_differences(saved_identity(provenance), identity))
            or "other settings") if provenance is not None else "an unreadable results.json"
    raise UserError(f"{out_dir} holds the report of another experiment ({what}); choose "
                    f"another folder with --out, or pass --overwrite to replace it")
