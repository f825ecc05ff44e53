"""The server-API SDK stays light: roomcast.api reaches no server module and imports
nothing but httpx, anyio and the standard library (read from the source with `ast`).

What it costs in a process is stated in docs/clients.md; the `roomcast` package's own
`__init__` (the server's names) is what an `import roomcast.api` pays on top today."""

from __future__ import annotations

import sys

from tests.unit.test_imports import _reachable, graph, imports_of, known_modules, package_of

ALLOWED_OURS = ("roomcast.api", "roomcast.errors")
ALLOWED_EXTERNAL = {"httpx", "anyio", "__future__"}


def test_the_sdk_reaches_only_its_own_modules_and_the_error_root() -> None:
    edges = graph()
    reached = set().union(*(_reachable(edges, m) for m in edges if m.startswith("roomcast.api")))
    assert {m for m in reached
            if not any(m == a or m.startswith(a + ".") for a in ALLOWED_OURS)} == set()


def test_the_sdk_imports_only_httpx_anyio_and_the_standard_library() -> None:
    modules = known_modules()
    ours = set(modules)
    outside: dict[str, set[str]] = {}
    for name, path in modules.items():
        if not name.startswith("roomcast.api"):
            continue
        external = {i.split(".")[0] for i in imports_of(path, package_of(path), ours)
                    if not i.startswith("roomcast")}
        extra = external - ALLOWED_EXTERNAL - set(sys.stdlib_module_names)
        if extra:
            outside[name] = extra
    assert outside == {}
