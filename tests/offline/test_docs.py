"""docs/formats.md: every block marked as run by this file runs as written (a fresh
interpreter, from the repository's root)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ME = "tests/offline/test_docs.py"
_BLOCK = re.compile(
    r"<!--(?P<marker>[^>]*)-->[ \t]*\n```(?P<lang>[A-Za-z]*)[^\n]*\n(?P<body>.*?)^```",
    re.S | re.M,
)


def _blocks() -> list[str]:
    text = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    return [m["body"] for m in _BLOCK.finditer(text) if ME in m["marker"]]


def test_the_document_has_runnable_blocks() -> None:
    assert _blocks()


@pytest.mark.parametrize("body", _blocks())
def test_the_block_runs(body: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", body], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "every block verifies" in done.stdout
