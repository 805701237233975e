# Would fail if: a running broker that finds its database went back in time (a failover
# to a standby that missed the last commits, a restore) kept the revocations the database
# lost to itself, so that processes started afterwards (and verifiers reading the feed
# from a snapshot) no longer knew them.
"""``tasklease serve`` on SQLite: another process revokes (this test, writing to the
database as a replica would), the broker reads the entries, then the database loses them
by hand (what a failover or a restore does); the running broker notices, keeps enforcing
them, writes them back to the database within its housekeeping round, and audits it
once (decision 259)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from e2e_support import RunningBroker, launch_broker, stop_broker

from tasklease.core.records import RevocationRecord
from tasklease.storage import open_store

pytestmark = pytest.mark.slow

ENOUGH = 10.0  # seconds; the broker notices within its poll and writes back within 1 s


def _stored(db: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return {
            (str(level), str(target))
            for level, target in conn.execute("SELECT level, target FROM revocations")
        }


def _held(broker: RunningBroker) -> int:
    """How many entries the broker's revocation index holds (its health, in detail)."""
    answer = broker.get("/v1/health", headers=broker.admin_headers())
    return int(answer.json()["revocation_entries"])


def test_a_running_broker_writes_back_what_the_database_lost(tmp_path: Path) -> None:
    broker = launch_broker(tmp_path / "data")
    db = tmp_path / "data" / "tasklease.db"
    try:
        lost = [
            ("agent", "spiffe://tasklease.local/agent/orch/task/lost-agent"),
            ("task", "lost-task"),
        ]
        before = _held(broker)
        store = open_store(str(db))
        now = int(time.time())
        for level, target in [("task", "kept-task"), *lost]:
            with store.write() as tx:
                tx.insert_revocation(RevocationRecord(level, target, now, now + 3600))
        store.close()
        deadline = time.monotonic() + ENOUGH
        while _held(broker) < before + 3:  # the broker read all three back
            assert time.monotonic() < deadline, broker.log()[-3000:]
            time.sleep(0.02)
        with sqlite3.connect(db) as conn:
            (keep,) = conn.execute(
                "SELECT seq FROM revocations WHERE level = 'task' AND target = 'kept-task'"
            ).fetchone()
            # The database goes back to just after the first revocation.
            conn.execute("DELETE FROM revocations WHERE seq > ?", (keep,))
            conn.execute("UPDATE revocation_seqs SET seq = ?", (keep,))
        assert not set(lost) & _stored(db)
        deadline = time.monotonic() + ENOUGH
        while not set(lost) <= _stored(db):
            assert time.monotonic() < deadline, broker.log()[-3000:]
            time.sleep(0.05)
        answer = broker.get(
            "/v1/audit/events",
            params={"event_type": "revocations_restored"},
            headers=broker.admin_headers(),
        )
        assert answer.status_code == 200, answer.text
        events = answer.json()["events"]
        assert [event["detail"] for event in events] == [
            "2 revocation entries the database lost (it went back in time) written again "
            "from this process's index: agent 1, task 1"
        ]
        assert "they stay enforced here and are written back" in broker.log()
    finally:
        stop_broker(broker)
