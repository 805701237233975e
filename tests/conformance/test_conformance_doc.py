"""docs/conformance.md is generated from this suite, and is current."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_conformance", ROOT / "scripts/gen_conformance.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_conformance"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_committed_doc_is_the_generated_one() -> None:
    assert _script().main(["--check"]) == 0, "run python scripts/gen_conformance.py"


def test_every_specification_claimed_has_its_module() -> None:
    titles = " ".join(s.title for s in (_script().read_module(p) for p in _script().modules()))
    for claimed in (
        "RFC 9457", "RFC 9068", "RFC 8037", "RFC 7638", "RFC 8693", "RFC 7662", "RFC 7009",
        "RFC 8705", "RFC 9449", "RFC 8707", "RFC 6750", "RFC 8725", "SPIFFE", "WIMSE", "MCP",
    ):  # fmt: skip
        assert claimed in titles, claimed


def test_the_check_notices_drift_and_writing_repairs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = _script()
    stale = tmp_path / "conformance.md"
    stale.write_text(script.generate() + "drift\n", encoding="utf-8")
    monkeypatch.setattr(script, "DOC_PATH", stale)
    assert script.main(["--check"]) == 1
    assert script.main([]) == 0
    assert script.main(["--check"]) == 0


def test_a_test_without_section_and_requirement_is_refused(tmp_path: Path) -> None:
    script = _script()
    module = tmp_path / "test_x.py"
    module.write_text('"""RFC 1: x."""\n\ndef test_rfc1_s1_x():\n    """no colon here"""\n')
    with pytest.raises(ValueError, match="section"):
        script.read_module(module)
    module.write_text('"""RFC 1: x."""\n\ndef test_rfc1_s1_x():\n    pass\n')
    with pytest.raises(ValueError, match="docstring"):
        script.read_module(module)


def test_deviations_and_inapplicable_requirements_are_rows(tmp_path: Path) -> None:
    script = _script()
    module = tmp_path / "test_x.py"
    module.write_text(
        '"""RFC 1: x."""\n\nNOT_APPLICABLE = {"s2 y": "no y here"}\n\n'
        '@deviation("because")\ndef test_rfc1_s1_x():\n    """§1: x MUST."""\n'
    )
    spec = script.read_module(module)
    assert [(r.section, r.status) for r in spec.rows] == [
        ("§1", "deliberate deviation: because"),
        ("s2 y", "not applicable: no y here"),
    ]
