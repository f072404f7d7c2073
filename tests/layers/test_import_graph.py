"""The packages of `broker` import each other along one direction only: no cycle between
packages, and the server (api, web, services) never imports the client. Read from the source
with `ast`, every import counted (also those inside functions and under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import broker

ROOT = Path(broker.__file__).parent
PACKAGES = (
    "api", "web", "http", "cli", "client", "services", "adapters", "domain", "age", "auditlog",
    "policy",
)  # fmt: skip
SERVER = ("api", "web", "http", "services")


def _node(module: str) -> str | None:
    """The graph node of a module: its package under broker/, a top-level module
    (`broker.config`), or `broker` itself (the app factory); None outside broker."""
    parts = module.split(".")
    if parts[0] != "broker":
        return None
    return parts[1] if len(parts) > 1 else "broker"


def _module(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def _imports(path: Path) -> list[str]:
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source == "broker":  # `from broker import age`: the subpackage, not the factory
                found += [f"broker.{alias.name}" for alias in node.names]
            else:
                found.append(source)
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> the files that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        here = _node(_module(path))
        assert here is not None
        for module in _imports(path):
            there = _node(module)
            if there is not None and there != here:
                graph[here][there].append(str(path.relative_to(ROOT.parent)))
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """A cycle of the graph (as its nodes, first repeated last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_every_package():
    graph = import_graph()
    nodes = set(graph) | {there for edges in graph.values() for there in edges}
    assert set(PACKAGES) <= nodes
    assert "api" in graph["broker"] and "services" in graph["api"]  # the reader works


def test_no_cycle_between_packages():
    graph = import_graph()
    cycle = _cycle(graph)
    if cycle:
        steps = [f"{a} -> {b}: {graph[a][b][:3]}" for a, b in zip(cycle, cycle[1:], strict=False)]
        raise AssertionError("import cycle between packages:\n" + "\n".join(steps))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == [
        "a", "b", "c", "a",
    ]  # fmt: skip
    assert _cycle({"a": {"b": ["x"]}, "b": {}}) is None


def test_the_server_never_imports_the_client():
    graph = import_graph()
    offenders = {
        package: graph[package]["client"] for package in SERVER if "client" in graph[package]
    }
    assert not offenders, f"server packages import broker.client: {offenders}"


def test_the_core_imports_no_edge_or_adapter():
    """The pure core (domain, age, auditlog, policy) imports nothing of the layers around it."""
    graph = import_graph()
    outer = {"api", "web", "http", "cli", "client", "services", "adapters", "broker"}
    for package in ("domain", "age", "auditlog", "policy"):
        assert not outer & set(graph[package]), (package, dict(graph[package]))


EDGES = ("api", "web", "cli", "http")


def test_the_edges_reach_rows_only_through_services():
    """API routes, pages and CLI commands translate and call a service, which authorizes: none
    imports the ORM models or sqlalchemy's query builder."""
    offenders = []
    for package in EDGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imports(path):
                if module.startswith("broker.adapters.db.models") or module in (
                    "sqlalchemy", "sqlalchemy.orm", "sqlalchemy.sql",
                ):  # fmt: skip
                    offenders.append(f"{path.relative_to(ROOT.parent)}: {module}")
    assert not offenders, offenders


def _commits(path: Path) -> list[int]:
    """The lines of `path` that call `.commit()` or `.commit_now()` on anything."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("commit", "commit_now")
    ]


def test_only_services_commit():
    """One rule for who commits: the service, through its unit of work. An edge opens the unit
    of work and calls one service; it never commits (a change it made itself would bypass the
    service's authorization and audit event)."""
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line}"
        for package in EDGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _commits(path)
    ]
    assert not offenders, offenders
