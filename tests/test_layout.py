"""The package's boundaries (DESIGN §1), read from the source: nothing in minidiff/ imports the stages or the
tools, the import graph of minidiff has no cycle, and only stage tests import stages/."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "minidiff"
STAGES = {p.stem for p in (REPO / "stages").glob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function, as absolute dotted names."""
    package = "minidiff" if path.parent == PACKAGE else None
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = f"{package}.{node.module or ''}".rstrip(".") if node.level else node.module or ""
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}      # `from . import ddpm` imports minidiff.ddpm
    return names


def package_graph() -> dict[str, set[str]]:
    """minidiff module -> the minidiff modules it imports."""
    modules = {f"minidiff.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {f"minidiff.{p.stem}": imports(p) & modules - {f"minidiff.{p.stem}"}
            for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_the_package_never_imports_stages_or_tools():
    for path in PACKAGE.glob("*.py"):
        bad = {name for name in imports(path) if name.split(".")[0] in STAGES | {"stages", "tools", "bench"}}
        assert not bad, f"{path.name} imports {bad}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports that comes back to its start, or None: a depth-first search that meets a module again while
    still inside it."""
    done, on_path = set(), []

    def visit(module):
        if module in on_path:
            return on_path[on_path.index(module):] + [module]
        if module in done:
            return None
        on_path.append(module)
        cycle = next((c for c in map(visit, sorted(graph.get(module, ()))) if c), None)
        on_path.pop()
        done.add(module)
        return cycle

    return next((c for c in map(visit, sorted(graph)) if c), None)


def test_the_package_import_graph_has_no_cycle():
    graph = package_graph()
    assert "minidiff.ddpm" in graph["minidiff.train"] and "minidiff.train" in graph["minidiff.mnist_backbone"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]   # the guard works
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_only_stage_tests_import_stages():
    for path in (REPO / "tests").glob("test_*.py"):
        if path.stem.startswith("test_stages") or path.name == "test_layout.py":   # (this file lists stages/)
            continue
        bad = {name for name in imports(path) if name.split(".")[0] in STAGES}
        assert not bad and '/ "stages"' not in path.read_text(), f"{path.name} reaches into stages/: {bad}"
