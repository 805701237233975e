"""docs/operations.md's table of `tasklease doctor` checks is the checks doctor makes.

Every ``Finding(check, severity, ...)`` of ``tasklease.cli._doctor`` (read from its
source) has a row naming the check with each severity it can have, and every row names
a check doctor makes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "tasklease" / "cli" / "_doctor.py"
DOC = ROOT / "docs" / "operations.md"
SEVERITIES = ("high", "medium", "low")


def _made() -> dict[str, set[str]]:
    """Each check doctor makes and its severities; one computed where it is made (``'high'
    if ... else 'medium'``, a variable) may be any severity the expression names, or
    high or medium when it names none."""
    made: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(SOURCE.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Finding"):
            continue
        check, severity = node.args[0], node.args[1]
        assert isinstance(check, ast.Constant) and isinstance(check.value, str)
        if isinstance(severity, ast.Constant):
            levels = {severity.value}
        else:
            named = set(re.findall(r"'(high|medium|low)'", ast.unparse(severity)))
            levels = named or {"high", "medium"}
        made.setdefault(check.value, set()).update(levels)
    return made


def _documented() -> dict[str, set[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text[
        text.index("## Before you deploy") : text.index(
            "\n## ", text.index("## Before you deploy") + 1
        )
    ]
    documented: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not set(re.split(r"\s*/\s*", cells[1])) <= set(SEVERITIES):
            continue
        for check in re.findall(r"`([a-z0-9-]+)`", cells[0]):
            documented[check] = set(re.split(r"\s*/\s*", cells[1]))
    return documented


def test_every_check_doctor_makes_is_documented_with_its_severities() -> None:
    made, documented = _made(), _documented()
    assert len(made) > 15
    assert sorted(set(made) - set(documented)) == [], "checks missing from operations.md"
    assert sorted(set(documented) - set(made)) == [], "documented checks doctor does not make"
    wrong = {c: (sorted(made[c]), sorted(documented[c])) for c in made if made[c] != documented[c]}
    assert wrong == {}, "check: (severities made, documented)"
