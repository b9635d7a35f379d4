"""Config files: shipped configs by name, and a .toml/.yaml/.yml file read to a mapping
(each failure one clear line)."""
from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from melanoma.config.yaml_files import load_yaml
from melanoma.util.errors import UserError, unknown_name

SHIPPED = Path(__file__).resolve().parent.parent / "configs"
MAX_CONFIG_BYTES = 2**20  # shipped configs are a few KB
MAX_CONFIG_NODES = 100_000  # values, YAML anchors expanded (a "billion laughs" file)


def shipped_names() -> list[str]:
    """Names of the configs that ship with the package (``--config NAME``)."""
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def resolve(path_or_name: str | Path) -> Path:
    """A config file: the path itself, or a shipped config's name (``default``, ``paper``).
    A bare name is a shipped config unless a file of that name exists: a folder named like
    one (``bench --out bench``, then ``bench`` again) does not hide it."""
    path = Path(path_or_name)
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1:
        if (SHIPPED / f"{path}.toml").is_file():
            return SHIPPED / f"{path}.toml"
        raise unknown_name("config", str(path), shipped_names(),
                           "not a file and not a shipped config")
    return path


def read_raw(path: Path) -> dict:
    """The top-level mapping of config file ``path`` (a UserError if unreadable or invalid)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or /dev/zero would block or never end
            raise UserError(f"cannot read config {path}: not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise UserError(f"cannot read config {path}: {info.st_size:,} bytes; a config is at most "
                            f"{MAX_CONFIG_BYTES:,}")
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not content
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
    if _size(raw, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
        raise UserError(f"config {path} holds more than {MAX_CONFIG_NODES:,} values (YAML "
                        f"anchors expanded): not a config")
    return raw


def _size(value, budget: int) -> int:
    """Values in ``value`` counted through shared (anchored) parts, up to ``budget`` + 1."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count
