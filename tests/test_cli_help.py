"""The command line explains itself and fails fast: every subcommand's --help has a one-line
description and examples without markup; user mistakes end in one line, exit 2, before
TensorFlow, Keras or JAX is imported; --log-format json writes one JSON object per line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.cli import COMMANDS
from melanoma.cli.main import build_parser
from melanoma.util import logs

ROOT = Path(__file__).resolve().parents[1]
MARKUP = ("`", ":func:", ":class:", ":mod:", "\n.. ", "**")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_description_and_examples_without_markup():
    parser = build_parser()
    commands = subparsers(parser)
    assert len(commands) == len(COMMANDS)
    top = parser.format_help()
    for name, sub in commands.items():
        text = sub.format_help()
        assert sub.description and sub.description.endswith("."), name
        assert len(sub.description) < 110, name  # one line
        assert f"examples:\n  melanoma-bench {name}" in text, name
        assert not [m for m in MARKUP if m in text], (name, [m for m in MARKUP if m in text])
        assert name in top
    assert not [m for m in MARKUP if m in top]


def test_defaults_name_the_config_and_deprecated_flags_are_hidden():
    commands = subparsers(build_parser())
    run_help = " ".join(commands["run"].format_help().split())
    assert "default: the config's data.dir, else the generated synthetic set" in run_help
    assert "the config's data.limit" in run_help
    evaluate_help = commands["evaluate"].format_help()
    assert "--variant" not in evaluate_help and "--preprocessing" in evaluate_help
    args = build_parser().parse_args(["evaluate", "m.keras", "--variant", "samplewise"])
    assert args.variant_deprecated == "samplewise"  # still read, with a deprecation line


PROBE = """
import json, sys
from melanoma.cli.main import main
code = main(sys.argv[1:])
print(json.dumps(sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules)))
sys.exit(code)
"""


def probe(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv, says", [
    (("run", "--data-dir", "/nonexistent"), "/nonexistent does not exist"),
    (("run", "--variant", "no_such_variant"), "unknown variant 'no_such_variant'"),
    (("run", "--set", "defaults.no_such_key=1"), "no_such_key"),
    (("run", "--config", "no_such_config"), "no_such_config"),
    (("run", "--set", 'defaults.backbone="ResNet5"'), "did you mean 'ResNet50'"),
    (("prepare", "--data-dir", "/nonexistent"), "/nonexistent does not exist"),
    (("tune", "--data-dir", "/nonexistent"), "/nonexistent does not exist"),
    (("bench", "--data-dir", "/nonexistent"), "/nonexistent does not exist"),
])
def test_user_errors_fail_in_one_line_before_any_backend_loads(argv, says, tmp_path):
    done = probe(*argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("melanoma-bench: error: "), done.stderr
    assert says in lines[0]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # no tensorflow, keras, jax
    assert not any(tmp_path.iterdir())  # nothing written


def test_json_log_format_writes_one_object_per_line(tmp_path):
    done = probe("--log-format", "json", "run", "--data-dir", "/nonexistent", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR" and record["message"].startswith("melanoma-bench: error:")


def test_json_formatter_carries_progress_records(capsys):
    try:
        logs.setup(0, "json")
        logging.getLogger("melanoma.runs.benchmark").info("data: %s (train %d)", "x", 3)
        logging.getLogger("melanoma.runs.benchmark").debug("hidden at level 0")
    finally:
        logs.setup(0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "data: x (train 3)" and record["level"] == "INFO"
    assert record["logger"] == "melanoma.runs.benchmark" and record["time"].endswith("+00:00")
