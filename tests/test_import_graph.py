"""No import circles between lossyds modules.

Module-level and function-level imports count (a lazy import still ties the two modules
together); imports under `if TYPE_CHECKING:` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "lossyds"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/lossyds."""
    names = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all depths, except inside `if TYPE_CHECKING:`."""
    found = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and is_type_checking(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The lossyds modules `module` imports. Importing a module also runs its parent
    packages; those implied edges are left out, as every package would otherwise form a
    circle with the submodules its `__init__` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names: list[str] = []
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                bases = [".".join(base + ([node.module] if node.module else []))]
            else:
                bases = [node.module or ""]
            names = [alias.name for alias in node.names]
        for base in bases:
            submodules = {f"{base}.{name}" for name in names if f"{base}.{name}" in known}
            targets |= submodules  # `from . import x` with x a submodule imports x
            if names and len(submodules) == len(names):
                continue  # only submodules named: the package itself runs anyway as their parent
            # The named module, or the nearest enclosing package that exists.
            while base and base not in known:
                base = base.rpartition(".")[0]
            if base:
                targets.add(base)
    targets.discard(module)
    return targets


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {module: imported_modules(module, path, known) for module, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles found by repeatedly removing one edge of each cycle found (for reporting)."""
    graph = {node: set(targets) for node, targets in graph.items()}
    cycles = []
    while cycle := find_cycle(graph):
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


def test_graph_sees_package_modules():
    graph = import_graph()
    assert "lossyds.manifest" in graph
    assert "lossyds.errors" in graph["lossyds.manifest"]


def test_no_import_cycles():
    cycles = all_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
