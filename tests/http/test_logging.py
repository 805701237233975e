"""Logs: JSON lines on stderr at the configured level, and never a secret."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from e2e_support import ADMIN_SECRET, RunningBroker, stop_broker


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
