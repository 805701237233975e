"""`tasklease audit verify --database` checks the agent and task lookups against the events.

The lookups (docs/audit.md, "Finding events") are plain tables: an entry deleted or moved
hides events from a query by agent or task while the chain stays intact. Verification
finds it, says how to rebuild them, and passes again once they are rebuilt.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.cli.test_cli import run

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry
from tasklease.core.clock import SystemClock
from tasklease.core.store import AuditQuery
from tasklease.storage import SQLiteStore
from tasklease.storage._sql.write_tx import SQLWriteTx

AGENT = "spiffe://tasklease.local/agent/orch/task-{}/{:016x}"


def _log(path: Path, count: int, start: int = 0) -> None:
    with SQLiteStore(path) as store:
        log = AuditLog(store, SystemClock())
        for i in range(start, start + count):
            log.record(
                AuditEntry(
                    "token_issued",
                    agent_id=AGENT.format(i % 3, i % 3),
                    task_id=f"task-{i % 3}",
                    orch_id="orch",
                    detail=f"Token issued, jti={i:032x}",
                )
            )
        log.close()


def _sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement)
    conn.close()


def test_verify_finds_an_edited_lookup_and_passes_once_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLWriteTx, "audit_index_every", 4)
    database = tmp_path / "tasklease.db"
    _log(database, 10)
    # Python's hash key fixed by the environment: a keyed BLAKE2b instead, same verdicts.
    fixed = {"PYTHONHASHSEED": "0"}
    for env in ({}, fixed):
        intact = run("audit", "verify", "--database", str(database), home=tmp_path, extra_env=env)
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert "audit chain intact: 10 events" in intact.stdout

    # An agent's event hidden from the agent filter: a lookup row moved to another seq
    # (the count stays the same).
    _sql(database, "UPDATE audit_agent_seqs SET seq = seq + 1 WHERE seq = 4")
    hidden = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert hidden.returncode == 1, hidden.stdout + hidden.stderr
    assert "audit lookups broken" in hidden.stderr
    assert "The events themselves are intact" in hidden.stderr
    again = run("audit", "verify", "--database", str(database), home=tmp_path, extra_env=fixed)
    assert again.returncode == 1 and "audit lookups broken" in again.stderr
    # Put back (event 4 is agent 0's), then a task's lookup row deleted.
    moved = AGENT.format(0, 0)
    _sql(database, f"UPDATE audit_agent_seqs SET seq = 4 WHERE seq = 5 AND agent_id = '{moved}'")
    assert run("audit", "verify", "--database", str(database), home=tmp_path).returncode == 0
    _sql(database, "DELETE FROM audit_task_seqs WHERE seq = 2")
    deleted = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert deleted.returncode == 1 and "audit lookups broken" in deleted.stderr

    # The rebuild the message names: empty them; the next appends fill them again.
    for table in ("audit_agent_seqs", "audit_task_seqs", "audit_indexed"):
        _sql(database, f"DELETE FROM {table}")
    _log(database, 5, start=10)
    rebuilt = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    with SQLiteStore(database) as store:
        assert store.audit_indexed() == 15
        events, total = store.query_audit(AuditQuery(task_id="task-2"))
        assert total == 5 and [e.seq for e in events] == [3, 6, 9, 12, 15]
