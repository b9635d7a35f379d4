"""YAML configs read with TOML's number rules."""
from __future__ import annotations


def load_yaml(text: str):
    """yaml.safe_load, except that ``1e-4`` is a float as in YAML 1.2 and TOML (PyYAML's
    YAML 1.1 rules read an exponent without a dot as a string)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
