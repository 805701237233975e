"""`tasklease audit verify --database` on PostgreSQL: an event whose stored `ts` (what
time filters read, not hashed) is not its timestamp is reported, as on SQLite
(tests/cli/test_audit_verify_times.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from pg_e2e import verify_chain

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry, timestamp_seconds
from tasklease.core.clock import SystemClock
from tasklease.core.store import AuditQuery
from tasklease.storage.postgres import PostgresStore


def test_verify_finds_an_edited_ts_on_postgres(pg_url: str, tmp_path: Path) -> None:
    with PostgresStore(pg_url) as store:
        log = AuditLog(store, SystemClock())
        for i in range(3):
            log.record(AuditEntry("token_issued", detail=f"event {i}"))
        log.record(AuditEntry("registration_failed", outcome="denied", detail="refused"))
        log.close()
        refused = list(store.iter_audit())[-1]
    seconds = timestamp_seconds(refused.timestamp)
    intact = verify_chain(pg_url, tmp_path)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit chain intact: 4 events" in intact.stdout

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit_events SET ts = 1 WHERE seq = %s", (refused.seq,))
    with PostgresStore(pg_url) as store:
        since = AuditQuery(outcome="denied", since=seconds - 60)
        assert store.query_audit(since)[1] == 0  # hidden from the time-ranged query
    hidden = verify_chain(pg_url, tmp_path)
    assert hidden.returncode == 1, hidden.stdout + hidden.stderr
    said = " ".join(hidden.stderr.split())
    assert "audit event times broken" in said
    assert f"event {refused.id} is stored with ts 1.0" in said

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit_events SET ts = %s WHERE seq = %s", (seconds, refused.seq))
    again = verify_chain(pg_url, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
