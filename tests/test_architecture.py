"""The package's shape: no import cycles, no private names across packages, small modules.

These read ``src/tilestream`` as text (``ast``), so they hold for every module,
including those an installation would not import (optional extras).

- **No import cycle between modules**, counting imports inside functions (a
  lazy import is still a dependency) but not those under ``TYPE_CHECKING``. A
  submodule importing from its own package's ``__init__`` that imports it back
  is a cycle too.
- **No private name across packages**: a module or name starting with ``_``
  belongs to the package that holds it; only modules inside that package may
  import it (``tilestream._util`` is private to ``tilestream``, so every
  subpackage may use it; ``tilestream.loaders._x`` only ``tilestream.loaders.*``).
- **Layers**: a package imports only packages of lower layers (``LAYERS``);
  ``tilestream.testing`` uses the layers and no layer uses it.
- **Modules under 600 lines and functions under 80**, except the ones listed with
  a reason in ``docs/architecture.md`` (CLI ``register`` functions are exempt).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "tilestream"
ARCHITECTURE_DOC = ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        """The package this module belongs to (itself, for a package's ``__init__``)."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module the import resolves to
    name: str | None  # the name taken from it (``from target import name``)
    line: int


def _modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for stub in sorted(PACKAGE.rglob("*.pyi")):  # compiled modules, known by their stubs
        if not stub.with_suffix(".py").exists():
            name = ".".join(stub.relative_to(SRC).with_suffix("").parts)
            out[name] = Module(name, stub, False)
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = Module(".".join(parts), path, is_package)
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _known(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the package."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports(module: Module) -> Iterator[Import]:
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tilestream"):
                    yield Import(module.name, _known(alias.name), None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if not base.startswith("tilestream"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:  # ``from package import submodule``
                    yield Import(module.name, full, None, node.lineno)
                else:
                    yield Import(module.name, _known(base), alias.name, node.lineno)


IMPORTS = [imp for module in MODULES.values() for imp in _imports(module)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_modules() -> None:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.importer:
            edges[imp.importer].add(imp.target)
    cycles = _cycles(edges)
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


#: The layers, top first: a package imports only packages of the rows below its own
#: (docs/architecture.md draws them). ``""`` is the root package ``tilestream`` itself.
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"viewer", "dataset", "detection", "distributed"},
    {"torch", "tf"},
    {"loaders", "extract"},
    {"slide", "tfrecord", "runfolder", "norm"},
    {"storage"},
    {"", "_util"},
    {"errors"},
]
#: Helpers for tests and benchmarks: they may use the layers; no layer may use them.
SIDE_PACKAGES = {"testing"}
#: Old import paths kept for users after a move into a side package; nothing imports them.
SIDE_ALIASES = {"tilestream.slide.synthetic"}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_packages_import_only_lower_layers() -> None:
    rank = {package: i for i, row in enumerate(LAYERS) for package in row}
    known = set(rank) | SIDE_PACKAGES
    assert {_package_of(m) for m in MODULES} <= known, "a package missing from LAYERS"
    bad = set()
    for imp in IMPORTS:
        src, dst = _package_of(imp.importer), _package_of(imp.target)
        if src == dst or imp.importer in SIDE_ALIASES:
            continue
        if dst in SIDE_PACKAGES or (src not in SIDE_PACKAGES and rank[dst] <= rank[src]):
            bad.add(f"{imp.importer} imports {imp.target}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))
    aliases_used = {imp.importer for imp in IMPORTS if imp.target in SIDE_ALIASES}
    assert not aliases_used, f"modules import an alias kept for users: {sorted(aliases_used)}"


def _private_owner(imp: Import) -> str | None:
    """The package a private module or name in ``imp`` belongs to (``None``: nothing private)."""
    parts = imp.target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    if imp.name and imp.name.startswith("_") and not imp.name.startswith("__"):
        return MODULES[imp.target].package
    return None


def test_no_private_name_imported_across_packages() -> None:
    bad = []
    for imp in IMPORTS:
        owner = _private_owner(imp)
        if owner is None:
            continue
        importer = MODULES[imp.importer]
        if not (importer.name == owner or importer.name.startswith(owner + ".")):
            what = f"{imp.target}.{imp.name}" if imp.name else imp.target
            bad.append(f"{importer.path.relative_to(ROOT)}:{imp.line} imports {what}")
    assert not bad, "private names imported from another package:\n" + "\n".join(bad)


def _documented_exceptions() -> set[str]:
    """The ``module`` and ``module:function`` names docs/architecture.md gives a reason for."""
    if not ARCHITECTURE_DOC.exists():
        return set()
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    return set(re.findall(r"^\|\s*`(tilestream[\w.]*(?::\w+)?)`", text, flags=re.MULTILINE))


def _long_functions() -> Iterator[tuple[str, int]]:
    for module in MODULES.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        cli = module.name.startswith("tilestream.cli.")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not (cli and node.name == "register"):
                yield f"{module.name}:{node.name}", length


def test_modules_and_functions_are_small_or_explained() -> None:
    allowed = _documented_exceptions()
    too_long = [
        f"{name} ({n} lines)"
        for name, module in MODULES.items()
        if (n := len(module.path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
        and name not in allowed
    ]
    too_long += [f"{name} ({n} lines)" for name, n in _long_functions() if name not in allowed]
    assert not too_long, (
        f"over {MAX_MODULE_LINES} lines (modules) or {MAX_FUNCTION_LINES} (functions), "
        "with no reason in docs/architecture.md:\n" + "\n".join(sorted(too_long))
    )


def test_documented_exceptions_still_exist() -> None:
    # A reason left behind for code that was split or deleted is stale documentation.
    functions = {name for name, _ in _long_functions()}
    big = {
        name
        for name, module in MODULES.items()
        if len(module.path.read_text(encoding="utf-8").splitlines()) > MAX_MODULE_LINES
    }
    stale = sorted(_documented_exceptions() - functions - big)
    assert not stale, "docs/architecture.md explains sizes that are no longer over the limit: " + (
        ", ".join(stale)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import tilestream.loaders._x as y", ["tilestream.loaders._x"]),
        ("from tilestream.slide.base import _helper", ["tilestream.slide.base._helper"]),
    ],
)
def test_the_scanner_sees_private_imports(
    tmp_path: Path, source: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checks above would pass vacuously if the scanner missed imports: feed it one.
    fake = Module("tilestream.viewer.fake", tmp_path / "fake.py", False)
    fake.path.write_text(source + "\n", encoding="utf-8")
    monkeypatch.setitem(
        MODULES, "tilestream.loaders._x", Module("tilestream.loaders._x", fake.path, False)
    )
    found = []
    for imp in _imports(fake):
        owner = _private_owner(imp)
        if owner is not None and not fake.name.startswith(owner + "."):
            found.append(f"{imp.target}.{imp.name}" if imp.name else imp.target)
    assert found == expected


def test_the_scanner_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
