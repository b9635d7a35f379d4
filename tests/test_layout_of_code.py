"""The code's shape, enforced: library/CLI boundary, TensorFlow-free reporting, sizes,
no installed `benchmarks` package, one console script with conventional flags."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "melanoma"


def modules(folder: Path = PACKAGE):
    return sorted(p for p in folder.rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_library_never_imports_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in modules()
                 if "cli" not in p.relative_to(PACKAGE).parts[:1]
                 and any(n == "melanoma.cli" or n.startswith("melanoma.cli.")
                         for n in imported_names(p))]
    assert offenders == []


TF_FREE = ("melanoma", "melanoma.api", "melanoma.evaluation.metrics", "melanoma.evaluation.rows",
           "melanoma.evaluation.metric_table", "melanoma.evaluation.variance",
           "melanoma.evaluation.gate", "melanoma.reporting.run_report", "melanoma.reporting.figures",
           "melanoma.reporting.html", "melanoma.reporting.audit_figures", "melanoma.cli.main")


def test_metrics_and_reporting_never_import_tensorflow_or_keras():
    """Imported together in a fresh interpreter, none of them pulls in TensorFlow or Keras
    (so `melanoma-bench report` and the statistics work without them)."""
    code = (f"import importlib, sys\nfor m in {TF_FREE!r}: importlib.import_module(m)\n"
            f"bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            f"print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reporting_modules_import_no_tensorflow_statically():
    for path in modules(PACKAGE / "reporting") + [PACKAGE / "evaluation" / "metrics.py"]:
        assert not {n for n in imported_names(path)
                    if n.split(".")[0] in ("tensorflow", "keras")}, path


def test_no_module_over_400_lines_and_no_function_over_60():
    long_modules, long_functions = [], []
    for path in modules():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > 400:
            long_modules.append(str(path.relative_to(ROOT)))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long_modules == [] and long_functions == []


def test_no_two_modules_share_a_name_across_subpackages():
    """Names say what a module does: no second `run.py` or `report.py` with another meaning
    (the CLI's one-module-per-subcommand folder is the one exception)."""
    seen: dict[str, str] = {}
    clashes = []
    for path in modules():
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or rel.parts[0] == "cli":
            continue
        if path.stem in seen:
            clashes.append((seen[path.stem], str(rel)))
        seen[path.stem] = str(rel)
    assert clashes == []


def test_benchmarks_is_not_an_installed_package(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import benchmarks"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.returncode != 0 and "No module named 'benchmarks'" in done.stderr


def test_no_test_imports_benchmarks_or_another_test_file():
    """Tests share code through conftest.py fixtures and run benchmarks/ as a user does (a
    subprocess), so a test file imports neither another test file nor the benchmarks."""
    tests = ROOT / "tests"
    local = {p.stem for p in tests.glob("*.py")}
    offenders = [f"{p.name}: {n}" for p in sorted(tests.glob("*.py")) for n in imported_names(p)
                 if n.split(".")[0] in local | {"benchmarks", "tests"}]
    assert offenders == []


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("melanoma-bench ")


def test_every_config_reading_command_takes_set_seed_and_data_dir(capsys):
    for command in ("run", "tune", "audit", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for flag in ("--set", "--seed", "--config", "--data-dir"):
            assert flag in text, (command, flag)
    for command in ("check", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--data-dir" in capsys.readouterr().out
