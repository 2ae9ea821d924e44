"""No import cycles among the modules of the ``videoccam`` package, function-level imports included.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` statement of a
module, wherever it stands (module level or inside a function: a lazy import only hides a cycle until
the function runs), except under ``if TYPE_CHECKING:``, which never runs. ``from a.b import c`` is an
edge to ``a.b.c`` when that is a module, else to ``a.b``. Importing a submodule also runs its parent
package's ``__init__``, but that implicit edge is left out: Python initialises the parent first, and a
package ``__init__`` that imports its own submodules would otherwise always be a "cycle".

Run as a script (``python tests/test_import_graph.py``) to print every cycle found.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "videoccam"


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of ``package`` under ``src``."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, except the bodies of ``if TYPE_CHECKING:``."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` (file ``path``) imports."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the package of this module, up level - 1 packages
            package = name.split(".") if is_package else name.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(src, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module
    (Tarjan's algorithm, then a DFS inside the component), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def strongconnect(node: str) -> None:  # recursion depth is bounded by the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    return [_cycle_in(graph, component) for component in sorted(components)]


def _cycle_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A cycle ``[a, ..., a]`` through the first module of a strongly connected ``component`` (DFS)."""
    members, start = set(component), component[0]
    path, seen = [start], {start}

    def walk(node: str) -> bool:
        for succ in sorted(graph[node] & members):
            if succ == start:
                path.append(start)
                return True
            if succ not in seen:
                seen.add(succ)
                path.append(succ)
                if walk(succ):
                    return True
                path.pop()
        return False

    walk(start)
    return path


# ---------------------------------------------------------------------------------------------


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import thing\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
                              "def f():\n    from pkg.sub import c\n")
    (pkg / "b.py").write_text("import pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom ..a import f\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.c"}, "pkg.b": {"pkg.a"}, "pkg.sub": set(),
                     "pkg.sub.c": {"pkg.b", "pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.c", "pkg.a"]]


def test_no_import_cycles_among_videoccam_modules():
    graph = import_graph()
    assert "videoccam.modeling" in graph and "videoccam.train.build" in graph
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles (module -> imported module):\n" + "\n".join(" -> ".join(c) for c in cycles)


if __name__ == "__main__":
    found = find_cycles(import_graph())
    for cycle in found:
        print(" -> ".join(cycle))
    print(f"{len(found)} cycle(s)")
    sys.exit(1 if found else 0)
