"""The data plane's imports go one way: node -> proxy -> balancing -> model, with no cycle.

Imports are read with ``ast`` from every module under ``slb/``, type-checking imports included
(a cycle through ``if TYPE_CHECKING:`` is still a cycle for a reader). ``slb.errors``,
``slb.metrics`` and ``slb.gcpause`` are leaves any layer may use; they import nothing of slb.
"""

from __future__ import annotations

import ast
from pathlib import Path

SLB = Path(__file__).resolve().parents[3] / "slb"
LAYERS = {"model": 0, "balancing": 1, "proxy": 2, "node": 3, "cli": 4, "__main__": 4}
LEAVES = {"slb.errors", "slb.metrics", "slb.gcpause", "slb.logs"}
EXEMPT: set[str] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SLB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every slb module ``path`` imports, by name, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # "from slb import http11" imports a module, not a name
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SLB.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def back_edges(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in edges.items():
        if source in EXEMPT:
            continue
        for target in targets:
            if source in LEAVES:
                bad.append(f"{source} -> {target}: a leaf imports nothing of slb")
            elif target in LEAVES or target == "slb":
                continue
            else:
                src, dst = layer(source), layer(target)
                if src is None or dst is None or dst > src:
                    bad.append(f"{source} -> {target}")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (at least one per strongly connected part)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt in EXEMPT or node in EXEMPT:
                continue
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_imports_go_one_way() -> None:
    assert back_edges(graph()) == []


def test_no_import_cycle_even_through_type_checking_imports() -> None:
    assert cycles(graph()) == []


def test_the_data_plane_never_imports_the_admin() -> None:
    offenders = [str(p) for p in SLB.rglob("*.py")
                 if any(m == "admin" or m.startswith("admin.") for m in imports_of(p))]
    assert offenders == []


def test_the_checks_catch_a_back_edge_and_a_cycle() -> None:
    edges = {"slb.model.schema": {"slb.proxy.router"}, "slb.proxy.router": {"slb.model.schema"}}
    assert back_edges(edges) == ["slb.model.schema -> slb.proxy.router"]
    assert cycles(edges) == [["slb.model.schema", "slb.proxy.router", "slb.model.schema"]]


def test_no_module_is_over_500_lines() -> None:
    long = {str(p.relative_to(SLB)): n for p in SLB.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500 and module_name(p) not in EXEMPT}
    assert long == {}
