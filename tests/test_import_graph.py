"""The import graph, enforced: the subpackages form layers, every import points down, and no
two modules import each other, directly or round a loop.

Imports inside functions count too: a lazy import hides a cycle from Python, not from the
reader. To add a subpackage, give it a place in LAYERS; to need an upward import, move the
code to the layer it belongs to instead.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "melanoma"

# Lowest first: a module may import its own subpackage and the ones listed before it.
LAYERS = (
    "util",        # errors, atomic files, keys, the Keras backend
    "data",        # images, layout, splits, the decoded-image cache and its loader
    "evaluation",  # metrics, rows, gate, leakage audit: numbers from saved predictions
    "models",      # backbones, the input layer, training, the model store, loading files
    "explain",     # Grad-CAM and its localisation check
    "config",      # the config schema and files
    "reporting",   # tables, figures, galleries, index.html from saved predictions
    "runs",        # run, bench, cross-validation, evaluating model files
    "tuning",      # keras-tuner head search
    "api",         # the Python entry points
    "cli",         # melanoma-bench
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def owner(name: str) -> str | None:
    """The project module an imported name lives in (``melanoma.x.y.f`` -> ``melanoma.x.y``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> set[str]:
    """Project modules that ``path`` imports anywhere in its body (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(owner(n) for n in names if n == "melanoma" or n.startswith("melanoma."))
    return found - {None}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_every_subpackage_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - {"configs"}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert folders | modules == set(LAYERS)


def test_no_import_points_up_a_layer():
    rank = {name: k for k, name in enumerate(LAYERS)}
    upward = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                    if (pa := subpackage(a) or a.split(".")[-1]) in rank
                    and (pb := subpackage(b) or b.split(".")[-1]) in rank and rank[pb] > rank[pa])
    assert upward == []


def test_no_import_cycles_between_modules():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    """The check can fail: a loop through three modules and a self-contained pair are found."""
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(cycles(planted)) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports():
    """``reporting.gallery_section`` imports Grad-CAM inside a function; the graph has it."""
    assert "melanoma.explain.gradcam" in GRAPH["melanoma.reporting.gallery_section"]


def test_evaluation_never_imports_models_runs_or_reporting():
    """The statistics work from saved predictions alone (the issue's own example)."""
    by_package = defaultdict(set)
    for module, targets in GRAPH.items():
        by_package[subpackage(module)].update(subpackage(t) for t in targets)
    assert by_package["evaluation"] <= {"evaluation", "data", "util", None}
