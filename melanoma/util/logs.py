"""Logging for the command line: the library logs through ``logging``; the CLI shows it.

Progress and warnings go to stderr as plain lines; stdout carries only the final table.
A notebook silences the library with ``logging.getLogger("melanoma").setLevel("WARNING")``.
"""
from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture, a redirect)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup(verbosity: int = 0) -> None:
    """-1 quiet (warnings and errors only), 0 progress (default), 1+ debug."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if verbosity < 1
                                           else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("melanoma")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
