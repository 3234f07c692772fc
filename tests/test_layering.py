"""The import graph of src/cxrlens keeps its layers: no cycle, no upward edge, no stage importing another stage.

Every ``import`` / ``from ... import`` of the source (module level, inside functions and under TYPE_CHECKING
alike) is an edge. Layers, lowest first (docs/architecture.md):

0. ``errors``, ``registry``, ``version``, ``text``, ``fileio`` — plain helpers;
1. ``config``, ``figures``, ``lightning_setup`` — configuration and shared drawing / engine set-up;
2. ``data``; 3. ``models``; 4. ``run`` (the run folder) and ``attribution`` (the attribution engine);
5. the stages ``train``, ``evaluate``, ``explain``, ``xai``, ``nap``, ``predict``, ``report`` — never each other;
6. ``cli``; 7. the package itself (``cxrlens/__init__``, ``__main__``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cxrlens"

LAYERS: dict[str, int] = {
    "errors": 0,
    "registry": 0,
    "version": 0,
    "text": 0,
    "fileio": 0,
    "config": 1,
    "figures": 1,
    "lightning_setup": 1,
    "data": 2,
    "models": 3,
    "run": 4,
    "attribution": 4,
    "train": 5,
    "evaluate": 5,
    "explain": 5,
    "xai": 5,
    "nap": 5,
    "predict": 5,
    "report": 5,
    "cli": 6,
    "__init__": 7,
    "__main__": 7,
}
STAGE = 5
# allowed edges between modules of one layer that are not stages (e.g. errors <- fileio)
SAME_LAYER = {("fileio", "errors"), ("registry", "errors"), ("config", "errors"), ("figures", "fileio")}
SAME_LAYER |= {("lightning_setup", "errors"), ("lightning_setup", "fileio"), ("text", "errors")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every cxrlens module named by an import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "cxrlens")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.split(".")[0] != "cxrlens":
                continue
            submodules = {f"{name}.{alias.name}" for alias in node.names if _is_module(f"{name}.{alias.name}")}
            found |= submodules  # `from cxrlens.run import maps` names the module cxrlens.run.maps
            if len(submodules) < len(node.names):
                found.add(name)
    return found


def _is_module(name: str) -> bool:
    path = SRC.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {target for target in imports_of(path) if target in modules and target != name}
    return graph


def unit(module: str) -> str:
    """The layered unit of a module: ``cxrlens.run.maps`` -> ``run``, ``cxrlens`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            if unit(source) != unit(target):
                out[unit(source)].add(unit(target))
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def bad_edges(packages: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(packages.items()):
        for target in sorted(targets):
            if source not in LAYERS or target not in LAYERS:
                problems.append(f"{source} -> {target}: add the package to LAYERS (tests/test_layering.py)")
            elif LAYERS[target] > LAYERS[source]:
                problems.append(f"{source} -> {target}: upward (layer {LAYERS[source]} imports {LAYERS[target]})")
            elif LAYERS[target] == LAYERS[source] == STAGE:
                problems.append(f"{source} -> {target}: a stage imports another stage")
            elif LAYERS[target] == LAYERS[source] and (source, target) not in SAME_LAYER:
                problems.append(f"{source} -> {target}: same layer (allow it in SAME_LAYER if it is meant)")
    return problems


def test_no_module_import_cycle():
    cycle = find_cycle(module_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_package_cycle_no_upward_edge_no_stage_to_stage():
    packages = package_graph(module_graph())
    assert find_cycle(packages) is None
    assert bad_edges(packages) == []


def test_the_checks_catch_what_they_should():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert bad_edges({"data": {"run"}}) == ["data -> run: upward (layer 2 imports 4)"]
    assert bad_edges({"explain": {"train"}}) == ["explain -> train: a stage imports another stage"]
    assert bad_edges({"report": {"run", "figures"}}) == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 450, f"{path.relative_to(SRC)} has {lines} lines: one concept per module"
