"""Cache keys: a short hash of a JSON-able spec (model keys, pool keys, search identity)."""
from __future__ import annotations

import hashlib
import json


def digest(spec) -> str:
    """16 hex digits of the SHA-256 of ``spec`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
