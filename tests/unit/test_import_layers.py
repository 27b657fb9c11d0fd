"""The package's import graph: no circles, and no arrow from a lower layer up to a higher one.

Reads every ``import`` in ``msm_megatron`` with :mod:`ast` (function-level imports included:
a lazy import is still a dependency) and checks them against :data:`LAYERS`. A module may import
its own top-level package, or any package in a lower layer; never one in its own layer or above.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "msm_megatron"

# Top to bottom; the packages in one layer do not import each other.
LAYERS = [
    {"cli"},
    {"demo"},
    {"pipeline"},
    {"eval", "generate", "train"},
    {"convert", "estimate"},
    {"llm", "data", "recipes"},
    {"models", "distributed"},
    {"architectures"},
    {"flops", "validate", "spec", "run_files", "faults", "weight_mapping"},
    {"config", "_compat"},
    {"config_paths"},
]


def _modules(root: Path = REPO) -> dict[str, Path]:
    out = {}
    for path in (root / PACKAGE).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The msm_megatron modules ``name`` imports (the longest module prefix of each target)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            # `from pkg import sub` depends on pkg.sub; `from mod import name` on mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE + ".") and target != name:
                found.add(target)
    return found


def _graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _top(module: str) -> str:
    return module.split(".")[1]


def _against_layers(graph: dict[str, set[str]]) -> list[str]:
    rank = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
    return sorted(f"{module} -> {target}" for module, targets in graph.items()
                  if module != PACKAGE for target in targets
                  if _top(module) != _top(target) and rank[_top(target)] <= rank[_top(module)])


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_every_package_is_in_a_layer():
    tops = {_top(m) for m in _modules() if m != PACKAGE}
    placed = set().union(*LAYERS)
    assert tops <= placed, f"put these in LAYERS: {sorted(tops - placed)}"


def test_no_import_runs_up_or_sideways_between_layers():
    wrong = _against_layers(_graph())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_module_graph_has_no_circles():
    assert not _circles(_graph()), f"import circles: {_circles(_graph())}"


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The checks can fail: a fake package with a circle (one side a lazy, relative import)
    and an arrow from the bottom layer up to the CLI is caught."""
    pkg = tmp_path / PACKAGE
    for sub in ("config", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "config" / "a.py").write_text("from msm_megatron.config import b\n")
    (pkg / "config" / "b.py").write_text("def f():\n    from . import a\n"
                                         "    from msm_megatron.cli import x\n")
    (pkg / "cli" / "x.py").write_text("")
    graph = _graph(tmp_path)
    assert graph["msm_megatron.config.a"] == {"msm_megatron.config.b"}
    assert graph["msm_megatron.config.b"] == {"msm_megatron.config.a", "msm_megatron.cli.x"}
    assert _circles(graph) == [["msm_megatron.config.a", "msm_megatron.config.b"]]
    assert _against_layers(graph) == ["msm_megatron.config.b -> msm_megatron.cli.x"]
