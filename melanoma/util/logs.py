"""Logging for the command line: the library logs through ``logging``; the CLI shows it.

Progress and warnings go to stderr as plain lines (or, with ``--log-format json``, one JSON
object per line: time, level, logger, message); stdout carries only the final table.
A notebook silences the library with ``logging.getLogger("melanoma").setLevel("WARNING")``.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, for pipelines that parse the log."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC)
                 .isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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


def setup(verbosity: int = 0, log_format: str = "text") -> None:
    """-1 quiet (warnings and errors only), 0 progress (default), 1+ debug; ``log_format``
    "text" (plain lines) or "json" (one object per line)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = _StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(message)s" if verbosity < 1
                                               else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("melanoma")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
