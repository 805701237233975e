"""`tasklease audit verify --database` checks each event's stored `ts` against its timestamp.

Time filters (`since`/`until`) read `ts`, the timestamp in Unix seconds kept beside the
hashed timestamp. The hash does not cover it, so an edited `ts` would hide an event from
every query by time, or move it to another range, while the chain stays intact.
Verification finds it, names the event, and passes again once the value is put back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.cli.test_cli import run

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry, timestamp_seconds
from tasklease.core.clock import SystemClock
from tasklease.core.store import AuditEvent, AuditQuery
from tasklease.storage import SQLiteStore


def _log(path: Path) -> list[AuditEvent]:
    with SQLiteStore(path) as store:
        log = AuditLog(store, SystemClock())
        for i in range(5):
            log.record(AuditEntry("token_issued", detail=f"event {i}"))
        log.record(AuditEntry("registration_failed", outcome="denied", detail="refused"))
        log.close()
        return list(store.iter_audit())


def _set_ts(path: Path, seq: int, ts: float) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE audit_events SET ts = ? WHERE seq = ?", (ts, seq))
    conn.close()


def _denied_since(path: Path, since: float) -> int:
    with SQLiteStore(path) as store:
        return store.query_audit(AuditQuery(outcome="denied", since=since))[1]


def test_verify_finds_an_edited_ts_and_passes_once_put_back(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    events = _log(database)
    refused = events[-1]
    seconds = timestamp_seconds(refused.timestamp)
    intact = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit chain intact: 6 events" in intact.stdout
    assert _denied_since(database, seconds - 60) == 1

    # The refusal moved out of every recent time range: the chain is untouched.
    _set_ts(database, refused.seq, 1.0)
    assert _denied_since(database, seconds - 60) == 0
    hidden = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert hidden.returncode == 1, hidden.stdout + hidden.stderr
    said = " ".join(hidden.stderr.split())
    assert "audit event times broken" in said
    assert f"event {refused.id} is stored with ts 1.0" in said
    assert refused.timestamp in said and "The events themselves are intact" in said
    assert "audit chain intact" not in hidden.stdout

    # A shift of a fraction of a second is found too, and each edited event is counted.
    _set_ts(database, refused.seq, seconds)
    assert run("audit", "verify", "--database", str(database), home=tmp_path).returncode == 0
    _set_ts(database, 2, timestamp_seconds(events[1].timestamp) + 0.001)
    _set_ts(database, 4, timestamp_seconds(events[3].timestamp) - 3600)
    shifted = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    said = " ".join(shifted.stderr.split())
    assert f"event {events[1].id} (and 1 more)" in said

    for event in events[1], events[3]:
        _set_ts(database, event.seq, timestamp_seconds(event.timestamp))
    again = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
