"""The package's import graph: no circle between modules, and no import that runs against the layering
(config and data never reach into models or training; the command-line package is the only top).

Every import counts, module-level or inside a function (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mrirecon"

# Lower layers never import higher ones; modules of one layer may import each other (without circles).
LAYERS = [
    {"atomic", "numerics", "options", "physics"},
    {"config"},
    {"data"},
    {"synthetic", "models"},
    {"evaluation"},
    {"training"},
    {"distributed"},
    {"demo"},
    {"cli"},
]
RANK = {name: i for i, group in enumerate(LAYERS) for name in group}


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (a name imported from a package counts as its module when
    one of that name exists, else as the package)."""
    paths = {_module_name(p, package): p for p in package.rglob("*.py") if p.name != "__main__.py"}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for module, path in paths.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = node.module or ""
                if node.level:
                    origin = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                names = [f"{origin}.{a.name}" for a in node.names]  # a submodule, else resolves to origin
            else:
                continue
            for name in names:
                while name and name not in paths:
                    name = name.rpartition(".")[0]
                if name and name != module and name != package.name:
                    graph[module].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        for target in targets:
            low, high = _layer(module), _layer(target)
            if low is not None and high is not None and high > low:
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name not in ("__init__.py", "__main__.py")}
    assert tops - set(RANK) == set(), "place new top-level modules in LAYERS"


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_upward_import():
    assert upward_imports(import_graph()) == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "mrirecon"
    (pkg / "data").mkdir(parents=True)
    (pkg / "models").mkdir()
    for init in (pkg, pkg / "data", pkg / "models"):
        (init / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from ..models import b\n")
    (pkg / "models" / "b.py").write_text("from ..data.a import f\n")
    (pkg / "models" / "c.py").write_text("from . import b, __init__\nfrom ..data import a\n")
    graph = import_graph(pkg)
    assert graph["mrirecon.data.a"] == {"mrirecon.models.b"}
    assert graph["mrirecon.models.c"] == {"mrirecon.models.b", "mrirecon.models", "mrirecon.data.a"}
    assert circles(graph) == [["mrirecon.data.a", "mrirecon.models.b"]]
    assert upward_imports(graph) == ["mrirecon.data.a -> mrirecon.models.b"]


@pytest.mark.parametrize("module", ["config", "data"])
def test_config_and_data_never_import_models_or_training(module):
    graph = import_graph()
    reach = {t.split(".")[1] for m, ts in graph.items() if m.split(".")[1:2] == [module] for t in ts}
    assert reach.isdisjoint({"models", "training", "distributed", "evaluation", "cli"})
