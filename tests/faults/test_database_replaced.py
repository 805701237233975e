"""The SQLite database file, or its WAL, is replaced or removed under a running broker.

Seen under faults: after ``mv backup.db tasklease.db`` (or ``rm tasklease.db-wal``) the
broker's writer went on committing into the file it had open, which no longer had a
name: every write was answered 200/201 and lost at the next start, and readiness said
ready. Writes must fail closed, saying why, readiness must refuse, reads go on, and the
broker writes again by itself if the file it opened is put back.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker

pytestmark = pytest.mark.slow

LAUNCH = {"agent_name": "replaced", "allowed_scope": ["read:data:*"]}


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.1)


def _refused(broker: RunningBroker, admin: dict[str, str], agent_id: str) -> None:
    answers = [
        broker.post("/v1/admin/launch-tokens", json=LAUNCH, headers=admin),
        broker.revoke("agent", agent_id),
        broker.post("/v1/admin/auth", json={"secret": broker.admin_secret}),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        problem = answer.json()
        assert problem["error_code"] == "service_unavailable"
        assert "replaced or removed" in problem["detail"], problem
        assert answer.headers["retry-after"].isdigit()
    _wait_until(lambda: broker.get("/v1/health/ready").status_code == 503, 5)
    assert "replaced or removed" in broker.get("/v1/health/ready").json()["detail"]


@pytest.mark.parametrize("which", ["database", "wal"])
def test_writes_fail_closed_while_the_file_is_not_the_one_opened(
    tmp_path: Path, which: str
) -> None:
    data = tmp_path / "data"
    broker = launch_broker(data, SHARED_ENV)
    try:
        admin = broker.admin_headers()
        agent = broker.register(["read:data:*"])
        database = data / "tasklease.db"
        target = database if which == "database" else data / "tasklease.db-wal"
        assert target.exists()
        aside = tmp_path / "aside"
        os.link(target, aside)  # the file the broker opened, kept to be put back
        if which == "database":
            backup = tmp_path / "backup.db"
            with sqlite3.connect(database) as source, sqlite3.connect(backup) as copy:
                source.backup(copy)
            os.replace(backup, database)
        else:
            target.unlink()

        _refused(broker, admin, agent.agent_id)
        assert broker.is_valid(agent.access_token)  # reads go on

        os.replace(aside, target)  # the file it opened is back under its name
        _wait_until(
            lambda: (
                broker.post("/v1/admin/launch-tokens", json=LAUNCH, headers=admin).status_code
                == 201
            ),
            10,
        )
        assert broker.revoke("agent", agent.agent_id).status_code == 200
        assert not broker.is_valid(agent.access_token)
        _wait_until(lambda: broker.get("/v1/health/ready").status_code == 200, 15)
    finally:
        stop_broker(broker)
