"""Logs: JSON lines on stderr at the configured level, and never a secret."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e_support import ADMIN_SECRET, RunningBroker, stop_broker
from starlette.testclient import TestClient

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.http.app import create_app
from tasklease.logs import (
    JsonLineFormatter,
    JsonLineHandler,
    _timestamp,
    access_writer,
    configure_logging,
)
from tasklease.storage import MemoryStore


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


@pytest.fixture
def broker_logging() -> Iterator[io.StringIO]:
    """The broker's logging configured (info) on a string stream; put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, JsonLineHandler)
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@contextlib.contextmanager
def _alone() -> Iterator[JsonLineHandler]:
    """Only the broker's handler on the root logger (pytest adds its own during a test)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    ours = [h for h in saved if isinstance(h, JsonLineHandler)]
    root.handlers[:] = ours
    try:
        yield ours[0]
    finally:
        root.handlers[:] = saved


def test_an_access_line_written_directly_is_the_line_of_its_record(
    broker_logging: io.StringIO,
) -> None:
    access = logging.getLogger("tasklease.access")
    fields = {"method": "POST", "route": "/v1/token/renew", "status": 200,
              "duration_ms": 1.25, "request_id": "r-1", "client": "10.0.0.1"}  # fmt: skip
    with _alone() as ours:
        writer = access_writer(access)
        assert writer is ours
        writer.write_info(access.name, "access", fields)
    record = logging.LogRecord(access.name, logging.INFO, "f.py", 1, "access", None, None)
    record.__dict__.update(fields)
    direct = json.loads(broker_logging.getvalue())
    through_logging = _render(record)
    assert list(direct) == list(through_logging)
    assert {k: v for k, v in direct.items() if k != "timestamp"} == {
        k: v for k, v in through_logging.items() if k != "timestamp"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(direct["timestamp"]))


def test_access_records_go_through_logging_when_anything_else_would_see_them(
    broker_logging: io.StringIO,
) -> None:
    access = logging.getLogger("tasklease.access")
    root = logging.getLogger()
    assert access_writer(access) is None  # pytest's capture handlers are on the root
    with _alone() as ours:
        assert access_writer(access) is ours
        _each_change_sends_records_through_logging(access, root, ours)


def _each_change_sends_records_through_logging(
    access: logging.Logger, root: logging.Logger, ours: JsonLineHandler
) -> None:

    def refuse(_record: logging.LogRecord) -> bool:
        return False

    other = logging.StreamHandler(io.StringIO())
    changes: list[tuple[Callable[[], None], Callable[[], None]]] = [
        (lambda: access.addHandler(other), lambda: access.removeHandler(other)),
        (lambda: root.addHandler(other), lambda: root.removeHandler(other)),
        (lambda: access.addFilter(refuse), lambda: access.removeFilter(refuse)),
        (lambda: ours.addFilter(refuse), lambda: ours.removeFilter(refuse)),
        (lambda: ours.setLevel(logging.WARNING), lambda: ours.setLevel(logging.NOTSET)),
        (lambda: access.setLevel(logging.WARNING), lambda: access.setLevel(logging.NOTSET)),
        (lambda: setattr(access, "propagate", False), lambda: setattr(access, "propagate", True)),
        (
            lambda: ours.setFormatter(logging.Formatter()),
            lambda: ours.setFormatter(JsonLineFormatter()),
        ),  # fmt: skip
    ]
    for change, undo in changes:
        change()
        try:
            assert access_writer(access) is None
        finally:
            undo()
        assert access_writer(access) is ours


def test_a_captured_access_record_carries_its_fields(
    broker_logging: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(Config(), MemoryStore(), KeyRing.generate(), nonce_secret=b"n" * 32)
    app = create_app(broker, background=False)
    caplog.set_level(logging.INFO, logger="tasklease.access")
    with TestClient(app) as client:
        assert client.get("/v1/health/live", headers={"X-Request-ID": "cap-1"}).status_code
    [record] = [r for r in caplog.records if r.name == "tasklease.access"]
    assert record.__dict__["route"] == "/v1/health/live"
    assert record.__dict__["request_id"] == "cap-1" and record.__dict__["status"] == 200
    # The broker's own handler got the record too, through logging.
    [line] = [json.loads(x) for x in broker_logging.getvalue().splitlines() if '"access"' in x]
    assert line["route"] == "/v1/health/live" and line["request_id"] == "cap-1"


def test_timestamps_are_utc_to_the_microsecond() -> None:
    for created in (0.0, 1.5, 1_733_400_000.25, 1_764_892_800.999_999, time.time()):
        expected = datetime.fromtimestamp(created, UTC)
        stamp = datetime.strptime(_timestamp(created), "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs(stamp.replace(tzinfo=UTC) - expected) <= timedelta(microseconds=1)
