"""Config files: shipped configs by name, and a .toml/.yaml/.yml file read to a mapping
(each failure one clear line)."""
from __future__ import annotations

import tomllib
from pathlib import Path

from melanoma.config.yaml_files import load_yaml
from melanoma.util.errors import UserError, unknown_name

SHIPPED = Path(__file__).resolve().parent.parent / "configs"


def shipped_names() -> list[str]:
    """Names of the configs that ship with the package (``--config NAME``)."""
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def resolve(path_or_name: str | Path) -> Path:
    """A config file: the path itself, or a shipped config's name (``default``, ``paper``)."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        if (SHIPPED / f"{path}.toml").is_file():
            return SHIPPED / f"{path}.toml"
        raise unknown_name("config", str(path), shipped_names(),
                           "not a file and not a shipped config")
    return path


def read_raw(path: Path) -> dict:
    """The top-level mapping of config file ``path`` (a UserError if unreadable or invalid)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read config {path}: {getattr(error, 'strerror', None) or error}"
                        ) from None
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise UserError(f"config {path}: use a .toml, .yaml or .yml file")
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else load_yaml(text)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise UserError(f"config {path} is not valid: {str(error).splitlines()[0]}") from None
    except Exception as error:  # yaml.YAMLError without importing yaml at module level
        raise UserError(f"config {path} is not valid: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a mapping at the top level")
    return raw
