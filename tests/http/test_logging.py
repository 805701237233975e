"""Logs: JSON lines on stderr at the configured level, and never a secret."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from e2e_support import ADMIN_SECRET, RunningBroker, stop_broker

from tasklease.logs import JsonLineFormatter


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    # The one plain line is the operator's "listening on" banner on stdout.
    records = [json.loads(line) for line in lines if not line.startswith("tasklease broker ")]
    return records


def test_info_level_logs_json_and_no_secret(start_broker: Callable[..., RunningBroker]) -> None:
    broker = start_broker(env={"TASKLEASE_LOG_LEVEL": "info"})
    token = broker.admin_token()
    assert (
        broker.get("/v1/audit/events", headers={"Authorization": "Bearer garbage"}).status_code
        == 401
    )
    stop_broker(broker)
    text = broker.log()
    records = _json_lines(text)
    assert records, text
    assert all({"event", "level", "timestamp"} <= rec.keys() for rec in records)
    assert any(rec["level"] == "info" for rec in records)
    assert ADMIN_SECRET not in text
    assert token not in text


def test_warning_level_drops_info(start_broker: Callable[..., RunningBroker]) -> None:
    broker = start_broker(env={"TASKLEASE_LOG_LEVEL": "warning"})
    broker.admin_token()
    stop_broker(broker)
    records = _json_lines(broker.log())
    assert all(rec["level"] != "info" for rec in records)


def test_unknown_level_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(tmp_path)],
        env={"TASKLEASE_LOG_LEVEL": "loud", "TASKLEASE_ADMIN_SECRET": ADMIN_SECRET, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "log_level must be one of" in result.stderr


def _render(record: logging.LogRecord) -> dict[str, object]:
    line = JsonLineFormatter().format(record)
    assert "\n" not in line  # one record, one line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_a_record_is_one_json_line_with_only_the_access_fields_as_extras() -> None:
    record = logging.LogRecord("tasklease.access", logging.INFO, "f.py", 1, "access", None, None)
    record.__dict__.update(method="POST", route="/v1/renew", status=200, duration_ms=1.5,
                           request_id="r1", client="10.0.0.1", token="not-logged")  # fmt: skip
    rendered = _render(record)
    assert list(rendered) == ["event", "method", "route", "status", "duration_ms",
                              "request_id", "client", "level", "logger", "timestamp"]  # fmt: skip
    assert rendered["event"] == "access" and rendered["status"] == 200
    assert rendered["level"] == "info" and rendered["logger"] == "tasklease.access"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(rendered["timestamp"]))
    assert "not-logged" not in json.dumps(rendered)


def test_a_record_with_arguments_an_exception_or_an_odd_extra() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, "f.py", 1, "failed %s", ("here",), exc_info)
    rendered = _render(record)
    assert rendered["event"] == "failed here" and rendered["level"] == "error"
    assert "ValueError: boom" in str(rendered["exception"])
    odd = logging.LogRecord("x", logging.WARNING, "f.py", 1, "odd", None, None)
    odd.__dict__["route"] = object()  # not a JSON type: its repr, the line still written
    assert str(_render(odd)["route"]).startswith("<object object at")


def test_text_beyond_ascii_is_escaped_so_no_record_can_be_split() -> None:
    for text in ("a\u2028b", "a\x85b", "a\nb", "é"):
        record = logging.LogRecord("x", logging.INFO, "f.py", 1, text, None, None)
        line = JsonLineFormatter().format(record)
        assert line.isascii() and len(line.splitlines()) == 1
        assert json.loads(line)["event"] == text
