"""The threat table of docs/security.md names tests that exist.

Each row's last cell lists the tests that hold its mitigations (``path.py`` or
``path.py::test_name``, relative to ``tests/``). A test moved or renamed without the table
following would leave a threat pointing at nothing: every named file must exist and every
named test must be defined in it, and only a threat out of scope may name none.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
_REFERENCE = re.compile(r"`(?P<path>[\w/]+\.py)(?:::(?P<name>[\w\[\].,-]+(?:::[\w\[\].,-]+)?))?`")


def _rows() -> list[tuple[str, str, str]]:
    """Each threat's id, its status and the cell that names its tests (the row's last)."""
    rows = []
    for line in (ROOT / "docs" / "security.md").read_text().splitlines():
        if line.startswith("| TM-"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.append((cells[0], cells[3], cells[-1]))
    return rows


def _defines(source: str, dotted: str) -> bool:
    """Whether ``source`` defines the test (or class) ``dotted`` names, parameters aside."""
    return all(
        re.search(
            rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(part.split('[')[0])}\b", source, re.M
        )
        for part in dotted.split("::")
    )


def test_the_table_has_its_rows() -> None:
    ids = [threat for threat, _, _ in _rows()]
    assert len(ids) >= 60 and len(set(ids)) == len(ids), ids


@pytest.mark.parametrize(("threat", "status", "cell"), _rows(), ids=[t for t, _, _ in _rows()])
def test_every_test_a_threat_names_exists(threat: str, status: str, cell: str) -> None:
    named = list(_REFERENCE.finditer(cell))
    assert named or status.startswith("out of scope"), f"{threat} names no test"
    missing = [
        reference[0]
        for reference in named
        if not (TESTS / reference["path"]).is_file()
        or (
            reference["name"]
            and not _defines((TESTS / reference["path"]).read_text(), reference["name"])
        )
    ]
    assert not missing, f"{threat} names tests that do not exist: {', '.join(missing)}"
