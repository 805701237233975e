"""The ``tasklease`` command where its extras are not installed.

``pip install tasklease`` (the SDK and the verifier) installs the ``tasklease`` script
too, but not typer, rich and PyYAML (the ``cli`` extra) nor the broker (``server``). There
the command says what to install, exit 2 (a configuration error), instead of a traceback;
so does a command whose broker dependencies are missing (``serve`` with typer installed by
hand, say). A module of tasklease itself that is missing is a bug and stays one.

Each case runs the declared entry point in a fresh interpreter in which the named modules
cannot be imported (``sys.modules[name] = None``, as if not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_PROBE = textwrap.dedent(
    """
    import importlib, sys
    for name in sys.argv[1].split(","):
        if name:
            sys.modules[name] = None
    module, _, function = sys.argv[2].partition(":")
    sys.argv = ["tasklease", *sys.argv[3:]]
    getattr(importlib.import_module(module), function)()
    """
)


def _entry_point() -> str:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return str(scripts["tasklease"])


def _run(blocked: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    return subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(blocked), _entry_point(), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("blocked", "args", "missing"),
    [
        # The SDK alone: no command at all, not even --help or --version.
        (("typer", "rich", "yaml"), ("--help",), "typer"),
        (("typer", "rich", "yaml"), ("--version",), "typer"),
        # typer installed by hand, the broker not: serve needs msgspec.
        (("msgspec",), ("serve", "--data-dir", "data"), "msgspec"),
    ],
)
def test_missing_extra_is_named_not_a_traceback(
    tmp_path: Path, blocked: tuple[str, ...], args: tuple[str, ...], missing: str
) -> None:
    ran = _run(blocked, *args, cwd=tmp_path)
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "Traceback" not in ran.stderr, ran.stderr
    assert f"error: the tasklease command needs {missing}" in ran.stderr, ran.stderr
    assert "pip install 'tasklease[cli]'" in ran.stderr


def test_the_entry_point_runs_the_command(tmp_path: Path) -> None:
    ran = _run((), "--version", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("tasklease ")


def test_a_missing_module_of_tasklease_is_not_hidden(tmp_path: Path) -> None:
    # Not an extra to install: the traceback stays (exit 1), as for any other bug.
    ran = _run(("tasklease.cli._doctor",), "--help", cwd=tmp_path)
    assert ran.returncode == 1
    assert "ModuleNotFoundError" in ran.stderr and "pip install" not in ran.stderr
