"""The shape of the import graph of ``tasklease``: its layers point one way.

Every module under ``src/tasklease`` is parsed (never imported) and every import in it
counts: at module level, inside functions, and under ``TYPE_CHECKING``. The graph must
have

* no cycle among tasklease modules;
* no import from ``tasklease.core`` into ``http``, ``storage``, ``cli``, ``client`` or
  ``verify`` (the domain knows none of its adapters);
* no import of another package's private name: a module or attribute whose name starts
  with one underscore belongs to the package that holds it, and only modules inside that
  package may import it.

The checker is tested on small planted trees too, so a regression in it cannot pass
silently.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"
ROOT = "tasklease"

# The domain imports none of these: they are its adapters.
ADAPTERS = ("http", "storage", "cli", "client", "verify")


@dataclass(frozen=True, slots=True)
class Import:
    """One imported name: ``module`` is the tasklease module it loads (the longest
    prefix of ``name`` that is a module), ``name`` the full dotted name imported."""

    importer: str
    module: str
    name: str
    line: int


def module_names(source: Path) -> dict[str, Path]:
    """Every module of the ``tasklease`` package under ``source``, by dotted name."""
    modules: dict[str, Path] = {}
    for path in sorted((source / ROOT).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name ``from <level dots><module> import ...`` refers to."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _owning_module(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module ("" when none is)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return ""


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every tasklease name ``importer`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(importer, _is_package(path), node.level, node.module)
            # "from x import *" loads x; "from x import y" names y in x (a module or not).
            names = [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name != ROOT and not name.startswith(ROOT + "."):
                continue
            target = _owning_module(name, modules)
            if target:
                yield Import(importer, target, name, node.lineno)


def import_graph(source: Path) -> list[Import]:
    modules = module_names(source)
    return [found for name, path in modules.items() for found in imports_of(name, path, modules)]


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a self-import)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.module)
        graph.setdefault(edge.module, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm; the graph is a few hundred nodes
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def cycle_path(component: list[str], edges: list[Import]) -> str:
    """One shortest cycle through the first member of ``component``, with import lines."""
    members = set(component)
    first: dict[tuple[str, str], int] = {}
    for edge in edges:
        if edge.importer in members and edge.module in members:
            key = (edge.importer, edge.module)
            first[key] = min(first.get(key, edge.line), edge.line)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier and start not in came_from:
        following: list[str] = []
        for node in frontier:
            for importer, module in sorted(first):
                if importer == node and module not in came_from:
                    came_from[module] = node
                    following.append(module)
        frontier = following
    path = [start]
    while path[-1] != start or len(path) == 1:
        path.append(came_from[path[-1]])
    path.reverse()
    return " -> ".join(f"{a} (line {first[(a, b)]})" for a, b in zip(path, path[1:])) + (
        f" -> {start}"
    )


def layer_violations(edges: list[Import]) -> list[str]:
    core = f"{ROOT}.core"
    adapters = tuple(f"{ROOT}.{name}" for name in ADAPTERS)
    return [
        f"{edge.importer}:{edge.line} imports {edge.name}"
        for edge in edges
        if _inside(edge.importer, core) and any(_inside(edge.module, a) for a in adapters)
    ]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _private_owner(name: str, modules: dict[str, Path]) -> str:
    """The package that owns the first private component of ``name`` ("" if none).

    A private submodule belongs to its parent package; a private attribute to the package
    of the module that defines it (a package's own ``__init__`` belongs to the package).
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            holder = ".".join(parts[:i])
            holder_path = modules.get(holder)
            if holder_path is not None and not _is_package(holder_path):
                return holder.rpartition(".")[0]
            return holder
    return ""


def private_violations(edges: list[Import], modules: dict[str, Path]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for edge in edges:
        owner = _private_owner(edge.name, modules)
        if owner and not _inside(edge.importer, owner):
            out.append((edge.importer, edge.name))
    return sorted(set(out))


# --- the checks on the real tree -----------------------------------------------------------


@pytest.fixture(scope="module")
def edges() -> list[Import]:
    found = import_graph(SOURCE)
    assert len(found) > 100, "the import graph looks empty: wrong source path?"
    return found


def test_no_import_cycles(edges: list[Import]) -> None:
    found = cycles(edges)
    assert not found, "import cycles among tasklease modules:\n" + "\n".join(
        f"{' <-> '.join(component)}\n  e.g. {cycle_path(component, edges)}" for component in found
    )


def test_core_imports_none_of_its_adapters(edges: list[Import]) -> None:
    found = layer_violations(edges)
    assert not found, "tasklease.core imports an adapter package:\n" + "\n".join(found)


def test_no_private_name_of_another_package_is_imported(edges: list[Import]) -> None:
    found = private_violations(edges, module_names(SOURCE))
    assert not found, "private names imported from another package:\n" + "\n".join(
        f"{importer} imports {name}" for importer, name in found
    )


# --- the checker itself, on planted trees --------------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"tasklease/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent.parts and not init.exists():
                init.write_text("")
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_hidden_in_a_function_and_under_type_checking(
    tmp_path: Path,
) -> None:
    source = _plant(
        tmp_path,
        {
            "tasklease/core/a.py": "def f():\n    from tasklease.core import b\n",
            "tasklease/core/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
            ),
            "tasklease/core/c.py": "from . import a\n",
            "tasklease/core/d.py": "import tasklease.core.a\n",
        },
    )
    assert cycles(import_graph(source)) == [
        ["tasklease.core.a", "tasklease.core.b", "tasklease.core.c"]
    ]


def test_checker_names_one_cycle_with_its_import_lines(tmp_path: Path) -> None:
    source = _plant(
        tmp_path,
        {
            "tasklease/core/a.py": "import os\nfrom tasklease.core import b\n",
            "tasklease/core/b.py": "from tasklease.core import a\nfrom tasklease.core import c\n",
            "tasklease/core/c.py": "from tasklease.core import a\n",
        },
    )
    edges = import_graph(source)
    (component,) = cycles(edges)
    assert cycle_path(component, edges) == (
        "tasklease.core.a (line 2) -> tasklease.core.b (line 1) -> tasklease.core.a"
    )


def test_checker_finds_a_self_import_and_a_relative_parent_import(tmp_path: Path) -> None:
    source = _plant(
        tmp_path,
        {
            "tasklease/core/a.py": "from tasklease.core.a import x\n",
            "tasklease/http/x/y.py": "from ..z import q\n",
            "tasklease/http/z.py": "from .x import y\n",
        },
    )
    assert cycles(import_graph(source)) == [
        ["tasklease.core.a"],
        ["tasklease.http.x.y", "tasklease.http.z"],
    ]


def test_checker_finds_core_importing_an_adapter(tmp_path: Path) -> None:
    source = _plant(
        tmp_path,
        {
            "tasklease/core/a.py": "def f():\n    import tasklease.storage.sqlite\n",
            "tasklease/core/b.py": "from tasklease.verify import Verifier\n",
            "tasklease/storage/sqlite.py": "from tasklease.core import a\n",
            "tasklease/verify/__init__.py": "Verifier = object\n",
            "tasklease/http/app.py": "from tasklease.core import a\n",
        },
    )
    assert layer_violations(import_graph(source)) == [
        "tasklease.core.a:2 imports tasklease.storage.sqlite",
        "tasklease.core.b:1 imports tasklease.verify.Verifier",
    ]


def test_checker_finds_private_names_of_another_package(tmp_path: Path) -> None:
    source = _plant(
        tmp_path,
        {
            "tasklease/core/_jws.py": "X = 1\n",
            "tasklease/core/kernel.py": "_probe = 1\n",
            "tasklease/core/user.py": (
                "from tasklease.core import _jws\nfrom .kernel import _probe\n"
            ),
            "tasklease/verify/a.py": "from tasklease.core import _jws\n",
            "tasklease/verify/b.py": "from tasklease.core._jws import X\n",
            "tasklease/verify/c.py": "from tasklease.core.kernel import _probe\n",
            "tasklease/verify/_own.py": "",
            "tasklease/verify/__init__.py": "from tasklease.verify._own import *\n",
            "tasklease/http/_sql/q.py": "",
            "tasklease/http/app.py": "import tasklease.http._sql.q\n",
            "tasklease/http/wire/_shape.py": "",
            "tasklease/http/routes.py": "from tasklease.http.wire import _shape\n",
            "tasklease/cli/main.py": "from tasklease import __version__\n",
        },
    )
    edges = import_graph(source)
    assert private_violations(edges, module_names(source)) == [
        ("tasklease.http.routes", "tasklease.http.wire._shape"),
        ("tasklease.verify.a", "tasklease.core._jws"),
        ("tasklease.verify.b", "tasklease.core._jws.X"),
        ("tasklease.verify.c", "tasklease.core.kernel._probe"),
    ]
