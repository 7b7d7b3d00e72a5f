"""The architecture's rules, checked on the source (docs/architecture.md).

Three rooms (netmgr, router, compute) talk only through the generated API
(``cloudnet.*`` from proto/). Shared host plumbing and API vocabulary live in
``common``, which imports no room. ``aio`` is the one composition root allowed
to import several rooms. Inside netmgr the API layer never reaches the
reconciler, and the CLI is a pure client. No two modules import each other,
directly or around a loop. Tests and benches import test code only from
``tests.lib`` (fixtures come by pytest_plugins, never by import).

Every import counts: module level or inside a function (a lazy import is still
a dependency); only imports under ``if TYPE_CHECKING:`` are left out, since
they never run.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROOMS = ("netmgr", "router", "compute")
PRODUCT = ("common", "aio", *ROOMS)
PROTO = "cloudnet"

# Import cycles that are allowed, with the reason. Empty: there are none.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files(tops: tuple[str, ...]) -> Iterator[pathlib.Path]:
    for top in tops:
        yield from sorted((ROOT / top).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(imported dotted name, line) for every import that can run."""
    def walk(node: ast.AST) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    yield from walk(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_package else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                for alias in child.names:
                    yield f"{base}.{alias.name}", child.lineno
            yield from walk(child)
    yield from walk(tree)


class Graph:
    """Modules of the product and what each imports (resolved to modules)."""

    def __init__(self, tops: tuple[str, ...]) -> None:
        self.files: dict[str, pathlib.Path] = {}
        raw: dict[str, list[tuple[str, int]]] = {}
        for path in _source_files(tops):
            name = _module_name(path)
            self.files[name] = path
            tree = ast.parse(path.read_text(), str(path))
            raw[name] = list(_imports(tree, name, path.name == "__init__.py"))
        self.edges: dict[str, list[tuple[str, int]]] = {
            name: [(self._resolve(imp), line) for imp, line in imps]
            for name, imps in raw.items()}

    def _resolve(self, dotted: str) -> str:
        """``a.b.c`` -> the longest prefix that is a module of ours, else as is."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in self.files:
                return candidate
        return dotted


GRAPH = Graph(PRODUCT)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(rule) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for module, imps in GRAPH.edges.items():
        for imported, line in imps:
            if rule(module, imported):
                path = GRAPH.files[module].relative_to(ROOT)
                out.append(f"{path}:{line}: {module} imports {imported}")
    return out


def test_the_graph_sees_every_room() -> None:
    # A walk that found nothing would pass every rule below.
    for top in PRODUCT:
        assert any(_top(m) == top for m in GRAPH.files), top
    assert sum(len(v) for v in GRAPH.edges.values()) > 500


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_no_other_room_and_not_aio(room: str) -> None:
    bad = _violations(lambda m, i: _top(m) == room and _top(i) in PRODUCT
                      and _top(i) not in (room, "common"))
    assert not bad, "rooms talk only through proto/ (cloudnet.*):\n" + "\n".join(bad)


def test_common_imports_no_room() -> None:
    bad = _violations(lambda m, i: _top(m) == "common" and _top(i) in PRODUCT
                      and _top(i) != "common")
    assert not bad, "common/ is shared by every room and imports none:\n" + "\n".join(bad)


def test_only_aio_joins_rooms() -> None:
    # Per module: which rooms it reaches, directly.
    bad = []
    for module, imps in GRAPH.edges.items():
        rooms = {_top(i) for i, _ in imps if _top(i) in ROOMS}
        if _top(module) in ROOMS:
            rooms.add(_top(module))
        if len(rooms) > 1 and _top(module) != "aio":
            bad.append(f"{module}: {sorted(rooms)}")
    assert not bad, "only aio/ may import several rooms:\n" + "\n".join(bad)


def test_netmgr_api_does_not_import_the_reconciler() -> None:
    bad = _violations(lambda m, i: _within(m, "netmgr.api") and _within(i, "netmgr.reconcile"))
    assert not bad, ("the API layer reaches the reconciler only through the hooks it is "
                     "given (netmgr.api.core.RouterHooks):\n" + "\n".join(bad))


def test_the_reconciler_reads_the_store_through_its_protocols() -> None:
    bad = _violations(lambda m, i: _within(m, "netmgr.reconcile")
                      and _within(i, "netmgr.store.facade"))
    assert not bad, ("the reconciler depends on the Protocols of netmgr.reconcile.store_view, "
                     "not on the store's facade:\n" + "\n".join(bad))


# pyroute2 ran each request through an asyncio loop of its own (~0.5 ms of
# CPU a request) and forked to open sockets in namespaces: links, addresses
# and routes are common.rtnl's (raw rtnetlink), wrapped once by common.netlink.


def test_nothing_imports_pyroute2() -> None:
    bad = _violations(lambda m, i: _within(i, "pyroute2"))
    assert not bad, ("links, addresses and routes go through common.netlink / common.rtnl "
                     "(raw rtnetlink), not pyroute2:\n" + "\n".join(bad))


# What every client of the cloud's API shares: how a channel is opened (the
# addresses, the policy, the retries, TLS). The CLI may use these two modules
# and nothing else of the product.
CLIENT_PLUMBING = ("common.channels", "common.tls")


def test_the_cli_is_a_pure_client() -> None:
    def ours(name: str) -> bool:
        return _top(name) in (*PRODUCT, PROTO)
    bad = _violations(lambda m, i: _within(m, "netmgr.cli") and ours(i)
                      and not (_within(i, "netmgr.cli") or _top(i) == PROTO
                               or i in CLIENT_PLUMBING))
    assert not bad, ("netmgr/cli imports only cloudnet.*, itself and the channel factory "
                     "(common.channels, common.tls):\n" + "\n".join(bad))


def test_the_channel_factory_imports_no_room() -> None:
    bad = _violations(lambda m, i: m in CLIENT_PLUMBING and _within(i, "common") is False
                      and _top(i) in PRODUCT)
    assert not bad, "common.channels and common.tls import nothing of the rooms:\n" + \
        "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    edges = {m: {i for i, _ in imps if i in GRAPH.files and i != m
                 and GRAPH.files[i].name != "__init__.py"}
             for m, imps in GRAPH.edges.items()}
    found = [c for c in _cycles(edges) if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def _is_test_code(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "tests" or any(p == "conftest" or p.startswith("test_") for p in parts)


def test_test_code_is_imported_only_from_tests_lib() -> None:
    # Fixtures are shared by pytest_plugins (tests/conftest.py loads tests/fixtures/),
    # helpers by tests/lib/. A conftest or test module imported elsewhere puts its
    # fixtures into the importer (a second definition, shadowing by import order)
    # and ties one test module to another's insides.
    graph = Graph(("tests", "bench"))
    bad, allowed = [], 0
    for module, imps in graph.edges.items():
        for imported, line in imps:
            if not _is_test_code(imported):
                continue
            if _within(imported, "tests.lib") and not _is_test_code(
                    imported.removeprefix("tests.lib")):
                allowed += 1
                continue
            path = graph.files[module].relative_to(ROOT)
            bad.append(f"{path}:{line}: {module} imports {imported}")
    assert allowed > 20, "too few imports of tests.lib found for the walk to be looking"
    assert not bad, ("test code is imported only as tests.lib.* (fixtures come by "
                     "pytest_plugins; no conftest, fixture or test module):\n" + "\n".join(bad))


def test_the_router_and_common_use_only_the_routers_own_api() -> None:
    # The router appliance's wheel (cloudnet-router) carries router, common and
    # the cloudnet.router stubs only: what netmgr offers router agents (host
    # registration) is defined there too.
    bad = _violations(lambda m, i: _top(m) in ("router", "common") and _top(i) == PROTO
                      and not _within(i, "cloudnet.router"))
    assert not bad, ("router/ and common/ import only cloudnet.router.*:\n" + "\n".join(bad))
