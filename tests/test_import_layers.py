"""vlbench's modules import one another without cycles, counting imports inside functions too, and no module
outside vlbench/cli/ imports the CLI (DESIGN.md, section 2). Read from the source with `ast`: nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vlbench"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside `if TYPE_CHECKING:`: read by type checkers, never executed."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The vlbench modules `path` imports anywhere in its body (module level, functions, methods). A
    package's own `__init__` that Python runs on the way to a submodule is not counted: only the module named."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level` dots up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from vlbench.x import y` imports the submodule vlbench.x.y when there is one, else names of vlbench.x
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {name for name in found if name in modules and name != here}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports(path, root, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_vlbench_modules():
    assert cycles(import_graph()) == [], "import cycles (module- or function-level imports)"


def test_only_the_cli_imports_the_cli():
    offenders = {name: sorted(t for t in targets if t == "vlbench.cli" or t.startswith("vlbench.cli."))
                 for name, targets in import_graph().items() if not name.startswith("vlbench.cli")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_graph_sees_function_level_imports_and_cycles(tmp_path):
    package = tmp_path / "vlbench"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from vlbench.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vlbench.c\n"
                                          "def f():\n    from .. import c\n")
    (package / "c.py").write_text("class C:\n    def m(self):\n        from vlbench.a import x\n")
    graph = import_graph(package)
    assert graph["vlbench.sub.b"] == {"vlbench.c"}
    assert cycles(graph) == [["vlbench.a", "vlbench.c", "vlbench.sub.b"]]
    (package / "c.py").write_text("")
    assert cycles(import_graph(package)) == []


def test_vlbench_has_at_most_26_top_level_modules():
    assert len(list(PACKAGE.glob("*.py"))) <= 26, "group modules into subpackages (cli/, board/, sweep/, ...)"
