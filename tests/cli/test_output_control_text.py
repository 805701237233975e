"""What the CLI prints of an audit event holds no control character or Unicode line
break as it is.

The broker's sanitizer masks them in every event it stores now; an event stored before it
masked C1 controls (U+0080-U+009F) and U+2028/U+2029 still holds the caller's text. So
every output escapes them: `audit export` and every ``--json`` line are ASCII JSON (as the
service log is), and the listings (table, plain lines, ``-o json``, ``-o yaml``) write
each as an escape. U+009B is the 8-bit CSI (terminal control); U+0085, U+2028 and U+2029
end a line for ``str.splitlines`` and many log shippers.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from rich.console import Console

from tasklease.cli import _output
from tasklease.cli._audit import _write_lines
from tasklease.cli._common import print_json

RAW = ("\x85", "\x9b", "\u2028", "\u2029", "\x7f", "\x1b", "\u202e", "\u2067")


def _old_events() -> list[dict[str, Any]]:
    """Events as a broker stored them before its sanitizer masked C1 and separators."""
    return [
        {
            "id": f"evt-{seq:06d}",
            "event_type": "console_form_refused",
            "outcome": "denied",
            "detail": f"origin=https://evil.example{char}2J café | denial=den_0123456789abcdef",
            "resource": f"/console/login{char}",
        }
        for seq, char in enumerate(RAW, start=1)
    ]


def _raw(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text if c in RAW]


def test_an_exported_event_is_one_ascii_line_for_every_reader() -> None:
    events = _old_events()
    written = io.StringIO()
    count = _write_lines(events, written.write)
    text = written.getvalue()
    assert count == len(events)
    assert text.isascii(), _raw(text)
    lines = text.splitlines()
    assert len(lines) == count, "a stored U+2028 or U+0085 split an exported event"
    assert [json.loads(line) for line in lines] == events  # the same text, escaped


def test_audit_events_json_lines_are_ascii(capsys: pytest.CaptureFixture[str]) -> None:
    events = _old_events()
    for event in events:
        print_json(event)
    text = capsys.readouterr().out
    assert text.isascii() and len(text.splitlines()) == len(events)
    assert [json.loads(line) for line in text.splitlines()] == events


def test_a_listing_writes_no_control_character_to_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tasklease audit events`` on a terminal: a table."""
    screen = io.StringIO()
    # A terminal without colours: every escape sequence printed would be the caller's.
    console = Console(file=screen, force_terminal=True, color_system=None, width=400, markup=False)
    monkeypatch.setattr(_output, "out", console)
    columns = [("detail", "detail", _output.field("detail"))]
    _output.emit(_old_events(), columns, _output.Output.table)
    printed = screen.getvalue()
    assert not _raw(printed), printed
    assert "evil.example\\u009b2J café" in printed  # shown escaped, the rest as written


def test_plain_json_and_yaml_listings_escape_control_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = _old_events()
    columns = [("id", "id", _output.field("id")), ("detail", "detail", _output.field("detail"))]
    _output.emit(events, columns, None)  # piped: tab-separated lines
    plain = capsys.readouterr().out
    assert not _raw(plain) and len(plain.splitlines()) == 1 + len(events), plain
    _output.emit(events, columns, _output.Output.json)
    as_json = capsys.readouterr().out
    assert not _raw(as_json) and json.loads(as_json) == events
    _output.emit(events, columns, _output.Output.yaml)
    as_yaml = capsys.readouterr().out
    assert not _raw(as_yaml) and yaml.safe_load(as_yaml) == events
    assert "café" in as_json + as_yaml  # other text beyond ASCII as written
