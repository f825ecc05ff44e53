"""The house's floors: no import circle anywhere in src/roomcast, and a pure routing core.

Every import counts: top-level ones, those inside functions and those under
`TYPE_CHECKING`, read from the source with `ast` (nothing is imported to find them).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "roomcast"
# The pure floor: no trio, no sockets, no actor or edge module may be reached from it.
PURE = ("roomcast.core", "roomcast.codes", "roomcast.errors", "roomcast.protocol",
        "roomcast.auth", "roomcast.limits", "roomcast.history", "roomcast.rooms",
        "roomcast.streams", "roomcast.websocket", "roomcast.metrics", "roomcast.settings",
        "roomcast.permissions", "roomcast.revocations", "roomcast.jwks", "roomcast.proxies",
        "roomcast.httpwire",
        # the client's core, shared by its Trio and asyncio shells
        "roomcast.client.session", "roomcast.client.rules", "roomcast.client.outbox",
        "roomcast.client.events",
        "roomcast.client.backoff", "roomcast.client.tokens", "roomcast.client.errors",
        # the server-API SDK's requests and results, shared by its two clients
        "roomcast.api.calls", "roomcast.api.results", "roomcast.api.errors",
        "roomcast.api.batch")
ACTORS_AND_EDGE = ("roomcast.backplane", "roomcast.router", "roomcast.server",
                   "roomcast.frontdoor", "roomcast.connection", "roomcast.transport",
                   "roomcast.mailbox", "roomcast.http", "roomcast.client", "roomcast.cli",
                   "roomcast.fuzz")
IO_MODULES = {"trio", "trio_websocket", "socket", "asyncio", "selectors", "select", "ssl",
              "coredis", "hypercorn", "starlette", "httpx", "subprocess", "threading"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def known_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, package: str, ours: set[str]) -> set[str]:
    """Every module `path` imports, wherever the import statement stands. `from A import B`
    counts as importing A.B when that is a module of ours, else as importing A."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in ours else base)
    return out


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def graph() -> dict[str, set[str]]:
    """roomcast module -> the roomcast modules it imports. (Python also runs a package's
    __init__ before any module in it; that implicit step is not an edge.)"""
    modules = known_modules()
    ours = set(modules)
    return {name: {imported for imported in imports_of(path, package_of(path), ours)
                   if imported in modules and imported != name}
            for name, path in modules.items()}


def circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def path_to(edges: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """One import path from `start` to `goal` (breadth first), or [] if none."""
    came: dict[str, str] = {}
    todo, seen = [start], {start}
    while todo:
        node = todo.pop(0)
        if node == goal:
            out = [goal]
            while out[-1] != start:
                out.append(came[out[-1]])
            return out[::-1]
        for nxt in sorted(edges.get(node, ())):
            if nxt not in seen:
                seen.add(nxt)
                came[nxt] = node
                todo.append(nxt)
    return []


def test_the_graph_sees_imports_inside_functions_and_under_type_checking(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    import roomcast.y\ndef f():\n    from . import router\n"
                      "    from roomcast import protocol as p\n")
    found = imports_of(sample, "roomcast", {"roomcast.router", "roomcast.protocol"})
    assert {"roomcast.y", "roomcast.router", "roomcast.protocol"} <= found
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "roomcast.router" in graph()["roomcast.server"]


def test_no_import_circle_in_roomcast() -> None:
    assert circle(graph()) is None


def test_the_pure_floor_imports_no_trio_no_io_and_no_actor() -> None:
    edges = graph()
    modules = known_modules()
    ours = set(modules)
    offenders = {}
    for root in [m for m in modules if _within(m, PURE)]:
        for name in sorted(set(path for m in [root] for path in _reachable(edges, m))):
            route = " -> ".join(path_to(edges, root, name))
            if _within(name, ACTORS_AND_EDGE) and not _within(name, PURE):
                offenders[root] = route
            path = modules[name]
            external = {imp.split(".")[0] for imp in imports_of(path, package_of(path), ours)}
            if external & IO_MODULES:
                offenders[root] = f"{route} imports {sorted(external & IO_MODULES)}"
    assert offenders == {}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen
