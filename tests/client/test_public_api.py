"""The SDK's public API as a developer meets it: every public name is documented (in the
docs and in ``help()``), nothing private leaks into ``__all__``, and a program written
from the docs passes ``mypy --strict``."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = (
    "tasklease.client",
    "tasklease.client.testing",
    "tasklease.verify",
    "tasklease.verify.asgi",
    "tasklease.verify.mcp",
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _public(name: str) -> list[tuple[str, object]]:
    module = _module(name)
    return [(n, getattr(module, n)) for n in module.__all__]


def _own_doc(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature a dataclass writes for itself says nothing
    return doc.strip()


def _members(cls: type) -> list[tuple[str, object]]:
    """The public methods and properties ``help(cls)`` shows, the SDK's own (inherited
    from another tasklease class too), not those of Exception, Protocol or dataclasses."""
    found: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("tasklease"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(value, property):
                found[name] = value.fget
            elif isinstance(value, classmethod | staticmethod):
                found[name] = value.__func__
            elif inspect.isfunction(value):
                found[name] = value
    return sorted(found.items())


@pytest.mark.parametrize("module", PUBLIC)
def test_all_names_only_public_objects(module: str) -> None:
    leaked = [n for n, _ in _public(module) if n.startswith("_")]
    missing = [n for n in _module(module).__all__ if not hasattr(_module(module), n)]
    assert leaked == [] and missing == []


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_class_function_and_member_has_a_docstring(module: str) -> None:
    undocumented = []
    for name, obj in _public(module):
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not _own_doc(obj):
            undocumented.append(name)
        if inspect.isclass(obj):
            undocumented += [f"{name}.{member}" for member, fn in _members(obj) if not _own_doc(fn)]
    assert undocumented == [], "help() shows these without a word on what they do"


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_is_in_the_docs(module: str) -> None:
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    )
    absent = [n for n, _ in _public(module) if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert absent == [], "document these in README.md or docs/ (docs/agents.md, verifier.md)"


@pytest.mark.slow
def test_a_program_written_from_the_docs_passes_mypy_strict(tmp_path: Path) -> None:
    program = Path(__file__).with_name("typed_user_program.py")
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy"),
            str(program),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"PATH": "", "MYPYPATH": str(ROOT / "src"), "HOME": str(tmp_path)},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
