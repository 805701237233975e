"""Every decision README.md and docs/*.md cite exists in docs/decisions.md.

A citation is ``decision N``, ``decisions N and M``, ``decisions N, M and K`` or
``docs/decisions.md N``; a number with no ``## N.`` entry fails here (an entry renumbered
or a typo sends a reader to the wrong rule).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DECISIONS = ROOT / "docs" / "decisions.md"

_CITATION = re.compile(
    r"\b(?:docs/)?decisions?(?:\.md)?,?\s+(?:entr(?:y|ies)\s+)?"
    r"(?P<numbers>\d{1,3}(?!\d|,\d)(?:(?:,\s*|,?\s+and\s+|\s*[-–]\s*)\d{1,3}(?!\d|,\d))*)",
    re.I,
)


def _entries() -> set[int]:
    text = DECISIONS.read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^## (\d+)\. ", text, re.M)}


def citations(text: str) -> list[int]:
    found = []
    for match in _CITATION.finditer(text):
        numbers = [int(n) for n in re.findall(r"\d+", match["numbers"])]
        if re.search(r"\d\s*[-–]\s*\d", match["numbers"]):  # a range: its ends
            numbers = [numbers[0], numbers[-1]]
        found += numbers
    return found


def test_the_citation_reader_reads_the_forms_used() -> None:
    assert citations("(decision 151)") == [151]
    assert citations("docs/decisions.md 14 and 99") == [14, 99]
    assert citations("decisions 250, 251 and 268") == [250, 251, 268]
    assert citations("after decision 123, 21,706 in") == [123]


def test_every_cited_decision_exists() -> None:
    entries = _entries()
    assert len(entries) > 300
    missing = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path == DECISIONS:
            continue
        for number in citations(path.read_text(encoding="utf-8")):
            if number not in entries:
                missing.append(f"{path.name}: decision {number}")
    assert missing == []
