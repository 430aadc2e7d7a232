"""The package's rooms and the direction imports may run (DESIGN.md, "Layout"): a room imports
only rooms listed after it, siblings never import each other, and no module imports itself back
through others. Deferred imports inside functions count: they are imports all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "git_theta_like"

# room -> rank; a module may import a room of a greater rank, or its own room
RANKS = {
    "__main__": 0,
    "cli": 1,
    "api": 2,
    "semdiff": 3,
    "merge": 3,
    "maintenance": 3,
    "migrate": 3,
    "publish": 3,
    "filters": 4,
    "lfs": 5,
    "store": 6,
    "formats": 7,
    "codecs": 7,
    "gitio": 8,
    "manifest": 9,
    "dtypes": 9,
    "errors": 9,
    "extras": 9,
    "threads": 9,
    "display": 9,
    "faults": 9,
    "concurrency": 9,
    "progress": 9,
    "__init__": 9,
}
BOTTOM = 9  # the bottom modules may import one another (acyclically)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules a file imports (the deepest module each import names)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule; `from pkg import name`, pkg itself
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                names.append(sub if sub in modules else node.module)
        for n in names:
            if n.startswith("git_theta_like") and n in modules:
                out.add(n)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = _imports(path, modules)
        # importing a.b.c also runs a.b's __init__: only count what the code names
        graph[name] = {d for d in deps if d != name}
    return graph


def test_every_module_belongs_to_a_room() -> None:
    unknown = sorted({_room(m) for m in _modules()} - set(RANKS))
    assert not unknown, f"modules outside the rooms of DESIGN.md: {unknown}"


def test_imports_run_down_the_layers() -> None:
    bad = []
    for mod, deps in _graph().items():
        room = _room(mod)
        for dep in deps:
            other = _room(dep)
            if other == room or dep == "git_theta_like":
                continue
            if RANKS[other] < RANKS[room] or (RANKS[other] == RANKS[room] and RANKS[room] != BOTTOM):
                bad.append(f"{mod} -> {dep} ({room} {RANKS[room]} -> {other} {RANKS[other]})")
    assert not bad, "imports that run up the layers or between siblings:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = _graph()
    # a package's __init__ is run by importing any of its submodules: edges from it to its own
    # submodules are how packages re-export, not cycles of the code
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_names_across_modules() -> None:
    bad = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("git_theta_like"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{name} imports {node.module}.{a.name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PKG.glob("*/__init__.py")))
def test_each_package_says_what_it_holds(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PKG / package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 20, f"git_theta_like/{package}/__init__.py needs a docstring"
