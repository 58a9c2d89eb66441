"""The layers of DESIGN.md, kept by reading the package's imports (``ast``, not a list by hand).

Every module of ``airp`` is read and put in its layer by where it lives:

====  ====================  ====================================================
  0   ``airp._version``     the version string; imports nothing
  1   ``airp._machine``     the sans-I/O IRP machine
  2   ``airp._shell``       the async shell
  3   ``airp._iomanager``   the I/O manager
  4   ``airp._tools``       tracing, the command line, the demo
  5   ``airp``, ``airp.__main__``, ``airp.testing``   the public front: may import anything
====  ====================  ====================================================

The rules checked:

- a module never imports from a higher layer: not at module level, not inside a function (a
  deferred import hides a cycle, it does not remove the dependency), and not under
  ``if TYPE_CHECKING:`` either (naming a higher layer's type is depending on it);
- no module takes part in an import cycle.  Cycles are looked for among the imports that
  execute: module-level and deferred ones.  Imports under ``if TYPE_CHECKING:`` never execute and
  are left out of the cycle check: they let mutually referential types name each other, as the C
  structures do (an IRP's stack location points at a DEVICE_OBJECT, whose DRIVER_OBJECT's dispatch
  routines take an IRP), and breaking those would mean merging modules or typing them with
  protocols that check less.  Across layers they can never close a cycle, because the layering
  rule already forbids the upward half;
- the IRP machine imports no event-loop library (anyio, trio, sniffio, asyncio), in any form;
- a layer's ``__init__`` holds its docstring and nothing else, so that importing one module of a
  layer never drags in the rest of it.

A failure prints the offending edges, for example
``airp._machine._irp -> airp._shell._waiting (deferred import, line 74)``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import airp

PACKAGE_DIR = Path(airp.__file__).parent

#: Layer of each subpackage (or module), longest prefix wins.
LAYERS: Mapping[str, int] = {
    "airp": 5,
    "airp.__main__": 5,
    "airp.testing": 5,
    "airp._version": 0,
    "airp._machine": 1,
    "airp._shell": 2,
    "airp._iomanager": 3,
    "airp._tools": 4,
}
LAYER_NAMES = {0: "version", 1: "machine", 2: "shell", 3: "I/O manager", 4: "tools", 5: "front"}
EVENT_LOOP_LIBRARIES = {"anyio", "trio", "sniffio", "asyncio"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # "import", "deferred import" or "TYPE_CHECKING import"
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


def package_sources(root: Path, package: str) -> dict[str, tuple[str, bool]]:
    """``{module name: (source, is_package)}`` for every ``.py`` file under *root*."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join([package, *parts])] = (path.read_text(), is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of *tree* with its kind (module level, deferred, type-only)."""

    def walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "TYPE_CHECKING import")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(child, "TYPE_CHECKING import" if kind == "TYPE_CHECKING import" else "deferred import")
            else:
                yield from walk(child, kind)

    yield from walk(tree, "import")


def import_edges(sources: Mapping[str, tuple[str, bool]]) -> tuple[list[Edge], list[Edge]]:
    """(edges between modules of the package, edges to modules outside it).

    Resolves relative imports against the importing module's package, and ``from X import y``
    to the module ``X.y`` when *y* is a module of the package (``from . import _irp``), else to
    ``X``.  Implicit imports of parent packages are not edges (a layer's ``__init__`` is empty).
    """
    internal: list[Edge] = []
    external: list[Edge] = []
    top = next(iter(sources)).split(".")[0]
    for name, (source, is_package) in sources.items():
        base = name.split(".") if is_package else name.split(".")[:-1]
        for node, kind in _imports(ast.parse(source)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    module = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module == "__future__":
                    continue
                for alias in node.names:
                    candidate = f"{module}.{alias.name}"
                    targets.append(candidate if candidate in sources else module)
            for target in dict.fromkeys(targets):
                edge = Edge(name, target, kind, node.lineno)
                if target == top or target.startswith(top + "."):
                    assert target in sources, f"{edge}: no such module in the package"
                    internal.append(edge)
                else:
                    external.append(edge)
    return internal, external


def layer_of(module: str, layers: Mapping[str, int] = LAYERS) -> int:
    """The layer of *module*: that of its longest prefix in *layers*.  The top package's own entry
    is for its ``__init__`` only: a new module directly under it belongs to no layer."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in layers:
            return layers[prefix]
    if module in layers:
        return layers[module]
    raise LookupError(f"{module} is in no layer: put it in one of the layers' subpackages")


def upward_edges(edges: list[Edge], layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Every edge from a module to a module of a higher layer, described."""
    found = []
    for edge in edges:
        low, high = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if high > low:
            found.append(f"{edge}: layer {low} ({LAYER_NAMES[low]}) imports layer {high} ({LAYER_NAMES[high]})")
    return found


def cycles(edges: list[Edge]) -> list[list[str]]:
    """One cycle through each strongly connected component of the graph (Tarjan), as a path
    ``[a, b, ..., a]``."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge.target)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)

    found = []
    for component in components:
        members = set(component)
        start = min(component)
        # A shortest way back to the start inside the component (breadth first).
        paths = {start: [start]}
        queue = [start]
        cycle: list[str] | None = None
        while queue and cycle is None:
            node = queue.pop(0)
            for nxt in graph[node]:
                if nxt == start:
                    cycle = [*paths[node], start]
                    break
                if nxt in members and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
        assert cycle is not None
        found.append(cycle)
    return found


SOURCES = package_sources(PACKAGE_DIR, "airp")
EDGES, EXTERNAL = import_edges(SOURCES)


def test_every_module_is_in_a_layer() -> None:
    """A new module goes into one of the layers' subpackages (or testing), not next to them."""
    assert len(SOURCES) > 30
    unplaced = []
    for name in SOURCES:
        try:
            layer_of(name)
        except LookupError:
            unplaced.append(name)
    assert not unplaced, f"modules outside every layer: {unplaced}"
    assert layer_of("airp") == 5
    with pytest.raises(LookupError):
        layer_of("airp._new_module")
    for subpackage in ("_machine", "_shell", "_iomanager", "_tools"):
        assert f"airp.{subpackage}._" in " ".join(SOURCES), f"airp.{subpackage} has no modules"


def test_no_module_imports_from_a_higher_layer() -> None:
    """DESIGN: lower layers never import higher ones (TYPE_CHECKING and deferred imports included)."""
    offending = upward_edges(EDGES)
    assert not offending, "imports from a higher layer:\n  " + "\n  ".join(offending)


def test_no_import_cycles() -> None:
    """No module takes part in an import cycle (among the imports that execute)."""
    runtime = [edge for edge in EDGES if edge.kind != "TYPE_CHECKING import"]
    found = cycles(runtime)
    by_pair = {(e.source, e.target): e for e in runtime}
    described = [
        " -> ".join(cycle) + "\n      " + "\n      ".join(str(by_pair[a, b]) for a, b in itertools.pairwise(cycle))
        for cycle in found
    ]
    assert not found, "import cycles:\n  " + "\n  ".join(described)


def test_machine_imports_no_event_loop_library() -> None:
    """DESIGN layer 1: the IRP machine imports no anyio (nor trio, sniffio, asyncio), in any form."""
    offending = [
        str(edge)
        for edge in EXTERNAL
        if layer_of(edge.source) <= 1 and edge.target.split(".")[0] in EVENT_LOOP_LIBRARIES
    ]
    assert not offending, "the machine imports an event-loop library:\n  " + "\n  ".join(offending)


def test_layer_packages_hold_only_a_docstring() -> None:
    """A layer's ``__init__`` is its docstring: importing one module never runs the others."""
    for name in ("airp._machine", "airp._shell", "airp._iomanager", "airp._tools"):
        source, is_package = SOURCES[name]
        assert is_package
        body = ast.parse(source).body
        assert len(body) == 1, f"{name}/__init__.py holds more than its docstring"
        docstring = ast.get_docstring(ast.parse(source))
        assert docstring is not None, f"{name}/__init__.py has no docstring"
        assert "May import" in docstring, f"{name}/__init__.py does not say what the layer may import"


# -- the checker checks -----------------------------------------------------------------------


FAKE = {
    "pkg": ("", True),
    "pkg._machine": ('"""doc"""', True),
    "pkg._machine._a": ("from . import _b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .._shell._c import C\n", False),
    "pkg._machine._b": ("def f():\n    from ._a import x\n    import anyio\n", False),
    "pkg._shell": ('"""doc"""', True),
    "pkg._shell._c": ("from .._machine._a import y\nfrom ..import _version\nimport pkg._machine._b as b\n", False),
    "pkg._version": ("", False),
}
FAKE_LAYERS = {"pkg": 5, "pkg._version": 0, "pkg._machine": 1, "pkg._shell": 2}


def test_checker_resolves_relative_imports_and_their_kinds() -> None:
    edges, external = import_edges(FAKE)
    assert {str(e) for e in edges} == {
        "pkg._machine._a -> pkg._machine._b (import, line 1)",
        "pkg._machine._a -> pkg._shell._c (TYPE_CHECKING import, line 4)",
        "pkg._machine._b -> pkg._machine._a (deferred import, line 2)",
        "pkg._shell._c -> pkg._machine._a (import, line 1)",
        "pkg._shell._c -> pkg._version (import, line 2)",
        "pkg._shell._c -> pkg._machine._b (import, line 3)",
    }
    assert [str(e) for e in external] == [
        "pkg._machine._a -> typing (import, line 2)",
        "pkg._machine._b -> anyio (deferred import, line 3)",
    ]


def test_checker_reports_upward_edges_and_cycles() -> None:
    edges, _ = import_edges(FAKE)
    assert upward_edges(edges, FAKE_LAYERS) == [
        "pkg._machine._a -> pkg._shell._c (TYPE_CHECKING import, line 4): layer 1 (machine) imports layer 2 (shell)"
    ]
    runtime = [e for e in edges if e.kind != "TYPE_CHECKING import"]
    assert cycles(runtime) == [["pkg._machine._a", "pkg._machine._b", "pkg._machine._a"]]
    assert cycles([e for e in runtime if e.kind == "import"]) == []
