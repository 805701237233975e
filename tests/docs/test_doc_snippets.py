"""Every code block of README.md and docs/ marked to be run by this file runs, as
written, against a real broker process.

A block is marked by an HTML comment on the line before its fence:
``<!-- snippet: run by tests/docs/test_doc_snippets.py -->`` (a Python or shell example)
or ``<!-- walkthrough: run by tests/docs/test_doc_snippets.py -->`` (shell steps that
build on each other). The blocks of one file run in order against one broker, with
``TASKLEASE_URL`` and ``TASKLEASE_ADMIN_SECRET`` set and the ``tasklease`` command on the
PATH; a shell block runs under ``bash -euo pipefail``, a Python block in a fresh
interpreter. Blocks other tests run say so in their own marker (``run by tests/...``);
the other blocks of the README and of the SDK's documents (docs/agents.md, verifier.md,
oauth.md) say why they are not run (``<!-- not run: ... -->``), and a test holds every
block of theirs to one of the two.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import launch_broker, stop_broker

ROOT = Path(__file__).resolve().parents[2]
ME = "tests/docs/test_doc_snippets.py"
_BLOCK = re.compile(
    r"(?:<!--(?P<marker>[^>]*)-->[ \t]*\n)?```(?P<lang>[A-Za-z]*)[^\n]*\n(?P<body>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    marker: str
    body: str


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("body"))
        marker = (match["marker"] or "").strip()
        found.append(Block(path, line, match["lang"], marker, match["body"]))
    return found


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _mine(path: Path) -> list[Block]:
    return [b for b in blocks(path) if ME in b.marker]


_MARKED = [path for path in _documents() if _mine(path)]


def test_the_runner_finds_the_readme_blocks() -> None:
    readme = _mine(ROOT / "README.md")
    assert {b.lang for b in readme} == {"sh", "python"} and len(readme) >= 4


# The README and the SDK's documents: every example a developer copies is run by a test,
# or says why not.
_HELD = ("README.md", "docs/agents.md", "docs/verifier.md", "docs/oauth.md")


@pytest.mark.parametrize("name", _HELD)
def test_every_code_block_is_run_or_says_why_not(name: str) -> None:
    unmarked = [
        f"{name}:{b.line}"
        for b in blocks(ROOT / name)
        if b.lang in ("sh", "python", "bash") and not b.marker
    ]
    assert unmarked == [], "mark these blocks as run by a test, or say why they are not run"


@pytest.mark.parametrize("name", _HELD)
def test_every_block_a_marker_names_a_test_that_exists(name: str) -> None:
    named = {
        found
        for b in blocks(ROOT / name)
        for found in re.findall(r"run by (tests/[\w/]+\.py)", b.marker)
    }
    assert [path for path in sorted(named) if not (ROOT / path).is_file()] == []


@pytest.mark.slow
@pytest.mark.parametrize("path", _MARKED, ids=[p.name for p in _MARKED])
def test_marked_blocks_run_against_a_real_broker(path: Path, tmp_path: Path) -> None:
    broker = launch_broker(tmp_path / "broker")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        {
            "TASKLEASE_URL": broker.url,
            "TASKLEASE_ADMIN_SECRET": broker.admin_secret,
            "HOME": str(work),
            "XDG_CONFIG_HOME": str(work / ".config"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "COLUMNS": "200",
        }
    )
    try:
        for block in _mine(path):
            if block.lang == "python":
                command = [sys.executable, "-c", block.body]
            elif block.lang in ("sh", "bash"):
                command = ["bash", "-euo", "pipefail", "-c", block.body]
            else:
                pytest.fail(f"{path.name}:{block.line}: cannot run a {block.lang!r} block")
            ran = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, timeout=120
            )
            assert ran.returncode == 0, (
                f"{path.name}:{block.line} failed ({ran.returncode}):\n{ran.stdout}\n{ran.stderr}"
            )
    finally:
        stop_broker(broker)
