"""The docs say only true things about the code: every module path (melanoma/...py,
melanoma.x.y), every relative link and every ``melanoma-bench COMMAND --flag`` that README.md,
CHANGELOG.md, reports/README.md and docs/*.md name exists (flags read from the argparse
parsers themselves)."""
from __future__ import annotations

import argparse
import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from melanoma.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "reports" / "README.md",
               *(ROOT / "docs").glob("*.md")])
PATH = re.compile(r"(?<![\w/.-])(melanoma/[\w/.-]*\w/?)")
DOTTED = re.compile(r"(?<![\w/.-])(melanoma(?:\.[A-Za-z_]\w*)+)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
COMMAND = re.compile(r"melanoma-bench(?: [^`\n|]*)?")


def doc_ids():
    return [str(p.relative_to(ROOT)) for p in DOCS]


def text_of(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


@cache
def parsers() -> tuple[argparse.ArgumentParser, dict]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(action.choices)


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def module_names(path: Path) -> set[str]:
    """Top-level names a module defines (functions, classes, assignments, imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def dotted_exists(name: str) -> bool:
    """melanoma.a.b is a package/module, or names something a module defines."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.is_file():
            rest = parts[cut:]
            return not rest or (len(rest) == 1 and rest[0] in module_names(module)) or (
                len(rest) == 2 and rest[0][0].isupper())  # Class.method: the class is enough
    return False


@pytest.mark.parametrize("doc", DOCS, ids=doc_ids())
def test_module_paths_exist(doc):
    text = text_of(doc)
    missing = [p for p in PATH.findall(text) if not (ROOT / p.rstrip("/")).exists()]
    missing += [d for d in DOTTED.findall(text) if not dotted_exists(d.rstrip("."))]
    assert not missing, f"{doc.name} names what does not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_ids())
def test_relative_links_exist(doc):
    targets = [t for t in LINK.findall(text_of(doc)) if "://" not in t]
    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


def commands_in(text: str) -> list[str]:
    """Every melanoma-bench command line (backslash continuations joined)."""
    return [c.strip() for c in COMMAND.findall(text.replace("\\\n", " "))]


def check_command(command: str) -> list[str]:
    """What in ``command`` the parsers do not know (empty: all known)."""
    top, subs = parsers()
    try:
        words = shlex.split(command, comments=True)[1:]
    except ValueError:  # an unbalanced quote inside prose: check the plain words
        words = command.split()[1:]
    globals_ = options(top)
    while words and words[0].startswith("-"):
        if words[0].split("=")[0] not in globals_:
            return [f"global option {words[0]}"]
        words = words[1:] if words[0] not in ("--log-format",) else words[2:]
    if not words or not re.fullmatch(r"[a-z]+", words[0]):
        return []  # "melanoma-bench COMMAND --help", "melanoma-bench: error: ..."
    name, rest = words[0], words[1:]
    if name not in subs:
        return [f"command {name}"]
    known = options(subs[name]) | globals_
    flags = [w.split("=")[0] for w in rest if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", w)]
    return [f"{name} {f}" for f in flags if f not in known]


@pytest.mark.parametrize("doc", DOCS, ids=doc_ids())
def test_commands_and_flags_exist(doc):
    unknown = [(c, u) for c in commands_in(text_of(doc)) for u in check_command(c)]
    assert not unknown, f"{doc.name}: unknown commands or flags: {unknown}"


def test_the_checks_can_fail():
    assert check_command("melanoma-bench run --no-such-flag") == ["run --no-such-flag"]
    assert check_command("melanoma-bench frobnicate") == ["command frobnicate"]
    assert check_command("melanoma-bench --log-format json run --limit 2 --wide") == []
    assert not dotted_exists("melanoma.models.no_such_module")
    assert not dotted_exists("melanoma.models.backbones.no_such_function")
    assert dotted_exists("melanoma.models.backbones.get_backbone")
    assert PATH.findall("see melanoma/metrics.py") == ["melanoma/metrics.py"]
