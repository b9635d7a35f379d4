"""Every command in the README's shell blocks is run here: cheap ones fully, the long ones as
slow tests, so the README cannot drift from what the commands do. (Its Python block is run by
tests/test_api.py.) A command added to the README without a runner here fails the first test.

Not run: the virtual-environment and pip parts of the two quick-start lines (they need a
network and minutes); what follows `&&` in them is."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ".venv/bin/"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.strip().startswith("#")]


QUICK_RUN = "python3.11 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/melanoma-bench run"
QUICK_TEST = ('python3.11 -m venv .venv && .venv/bin/pip install -e ".[test]" && '
              ".venv/bin/python -m pytest")
SMOKE = ".venv/bin/melanoma-bench run --set defaults.epochs=1 --limit 20 --out reports/smoke"
REPORT = ".venv/bin/melanoma-bench report reports/smoke"
CHECK = ".venv/bin/melanoma-bench check --data-dir DIR"
OWN_DATA = ".venv/bin/melanoma-bench run --config isic2017 --data-dir DIR"
BACKBONE = (".venv/bin/melanoma-bench run --set "
            "'variants.efficient_net_b0_samplewise.backbone=\"ResNet50\"' --variant "
            "efficient_net_b0_samplewise --limit 20 --set defaults.epochs=1 --set "
            "defaults.image_size=32")
GPU_EXTRA = '.venv/bin/pip install -e ".[gpu]"'
PAPER = ".venv/bin/melanoma-bench run --config paper --data-dir DIR"
COVERED = {QUICK_RUN, QUICK_TEST, SMOKE, REPORT, CHECK, OWN_DATA, BACKBONE, GPU_EXTRA, PAPER}


def test_every_readme_command_has_a_runner():
    assert set(readme_commands()) == COVERED


def bench(argv: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env,
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "melanoma.cli.main", *argv], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=3000)


def words(command: str, data_dir: Path | None = None) -> list[str]:
    """The melanoma-bench arguments of a README line (DIR replaced by ``data_dir``)."""
    import shlex

    argv = shlex.split(command.split(VENV + "melanoma-bench", 1)[1])
    return [str(data_dir) if w == "DIR" else w for w in argv]


@pytest.fixture(scope="module")
def data_dir():
    from melanoma import config
    from melanoma.data import synthetic

    return synthetic.ensure_dataset(config.load("default").data.synthetic)


def test_check_runs_on_a_data_folder(data_dir, tmp_path):
    done = bench(words(CHECK, data_dir), tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout[done.stdout.index("{"):])  # the report as JSON


def test_paper_without_weights_stops_at_once_naming_the_file(data_dir, tmp_path):
    done = bench(words(PAPER, data_dir), tmp_path, KERAS_HOME=str(tmp_path / "keras"))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "efficientnetb6_notop.h5" in line and str(tmp_path / "keras" / "models") in line
    assert not any(p.name in ("reports", "models") for p in tmp_path.iterdir())


def test_gpu_extra_exists():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "gpu" in extras and "test" in extras


def test_backbone_command_is_the_one_test_backbones_runs():
    source = (ROOT / "tests" / "test_backbones.py").read_text()
    for word in words(BACKBONE):
        assert repr(word) in source or f'"{word}"' in source, word


@pytest.mark.slow
def test_own_data_command_on_tiny_settings(data_dir, tmp_path):
    tiny = ["--limit", "8", "--set", "defaults.epochs=1", "--set", "defaults.image_size=32",
            "--variant", "efficient_net_b0_samplewise"]
    done = bench(words(OWN_DATA, data_dir) + tiny, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "reports" / "isic2017" / "index.html").is_file()


@pytest.mark.slow
def test_smoke_run_then_report(tmp_path):
    done = bench(words(SMOKE), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    before = (tmp_path / "reports" / "smoke" / "results.csv").read_bytes()
    rebuilt = bench(words(REPORT), tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (tmp_path / "reports" / "smoke" / "results.csv").read_bytes() == before


@pytest.mark.slow
def test_quick_start_default_job(tmp_path):
    done = bench(words(QUICK_RUN.split(" && ")[-1]), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "reports" / "default" / "index.html").is_file()
    assert "efficient_net_b0_samplewise" in done.stdout  # the table on stdout


@pytest.mark.slow
def test_quick_start_test_command_collects_the_suite():
    """Running the whole suite from inside it would recurse: collect it instead."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\d+ tests? collected|\d+/\d+ tests collected", done.stdout), done.stdout[-500:]
