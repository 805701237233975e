"""The audit log's agent and task lookups, kept behind the log (migration 0018).

They are filled in the transaction of an append once they lag by
``SQLWriteTx.audit_index_every`` events; a query reads them up to their last event and the
log itself after it. Whatever the lag, a query by agent or task finds exactly the events a
scan would, on every backend; the lookups follow a log cut back by hand, and the migration
fills them for the events written before it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.storage.test_conformance import append, chain

from tasklease.core.store import AuditEvent, AuditQuery, Store
from tasklease.storage import SQLiteStore
from tasklease.storage._sql.write_tx import SQLWriteTx


def _expect(store: Store, query: AuditQuery, keep: list[AuditEvent]) -> None:
    got, total = store.query_audit(query)
    assert (got, total) == (keep[query.offset : query.offset + query.limit], len(keep))


def _every_lookup(store: Store, events: list[AuditEvent]) -> None:
    for agent in sorted({e.agent_id for e in events}) + ["agent-9"]:
        _expect(store, AuditQuery(agent_id=agent), [e for e in events if e.agent_id == agent])
    for task in sorted({e.task_id for e in events}):
        _expect(store, AuditQuery(task_id=task), [e for e in events if e.task_id == task])
        _expect(
            store,
            AuditQuery(task_id=task, agent_id="agent-1", limit=2, offset=1),
            [e for e in events if (e.task_id, e.agent_id) == (task, "agent-1")],
        )
    _expect(
        store,
        AuditQuery(agent_id="agent-0", outcome="denied"),
        [e for e in events if e.agent_id == "agent-0" and e.outcome == "denied"],
    )
    _expect(
        store,
        AuditQuery(agent_id="agent-2", outcome="success", event_type="type-1"),
        [
            e
            for e in events
            if (e.agent_id, e.outcome, e.event_type) == ("agent-2", "success", "type-1")
        ],
    )


@pytest.mark.parametrize("every", [1, 4, 7, 4096])
def test_lookups_find_every_event_whatever_their_lag(
    store: Store, monkeypatch: pytest.MonkeyPatch, every: int
) -> None:
    monkeypatch.setattr(SQLWriteTx, "audit_index_every", every)
    events = chain(31)
    for start in range(0, len(events), 3):
        append(store, events[start : start + 3])
        _every_lookup(store, events[: start + 3])


def _indexed(path: Path) -> tuple[int, int, int]:
    """(the lookups' last event, agent entries, task entries), read beside the store."""
    raw = sqlite3.connect(path)
    try:
        row = raw.execute("SELECT seq FROM audit_indexed WHERE tenant_id = 'default'").fetchone()
        agents = raw.execute("SELECT COUNT(*) FROM audit_agent_seqs").fetchone()[0]
        tasks = raw.execute("SELECT COUNT(*) FROM audit_task_seqs").fetchone()[0]
    finally:
        raw.close()
    return (0 if row is None else row[0], agents, tasks)


def test_lookups_are_filled_once_they_lag_by_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLWriteTx, "audit_index_every", 5)
    path = tmp_path / "audit.db"
    events = chain(12)
    with SQLiteStore(path) as store:
        append(store, events[:4])
        assert _indexed(path) == (0, 0, 0)  # 4 behind: read from the log
        append(store, events[4:6])
        assert _indexed(path) == (6, 6, 6)  # 6 behind: all of them filled, in one go
        append(store, events[6:12])
        assert _indexed(path) == (12, 12, 12)
        _every_lookup(store, events)


def test_lookups_follow_a_log_cut_back_and_grown_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rewritten tail (tests/threats/test_tm_28_audit_tampering.py detects it): the
    # lookups must neither lose the new events nor bring back the removed ones.
    monkeypatch.setattr(SQLWriteTx, "audit_index_every", 2)
    path = tmp_path / "audit.db"
    events = chain(10)
    with SQLiteStore(path) as store:
        append(store, events)
        assert _indexed(path) == (10, 10, 10)
        raw = sqlite3.connect(path)
        with raw:
            raw.execute("DELETE FROM audit_events WHERE seq > 6")
        raw.close()
        regrown = chain(4, start=(6, events[5].hash), agent_id="agent-7", task_id="task-7")
        append(store, regrown)
        assert _indexed(path) == (10, 10, 10)
        kept = events[:6] + regrown
        _every_lookup(store, kept)
        _expect(store, AuditQuery(agent_id="agent-7"), regrown)
        _expect(store, AuditQuery(task_id="task-7"), regrown)


_INDEX_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'index'",
    "postgres": "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_events'",
}
# Back from 30 (the live agents counted by index), 29 (the agents by registration time),
# 28 (the agents' lineage), 27 (the retired signing keys), 26 (launch tokens bound to a
# key), 25 (the federated feeds heard), 24 (the admin's credential), 23 (the apps'
# credential changes), 22 (the agents' ceilings), 21 and 20: the revocations numbered by
# one sequence again (the log has none).
_BACK_TO_19 = {
    "sqlite": (
        "DROP INDEX agents_live",
        "DROP INDEX agents_by_app",
        "DROP INDEX agents_by_task",
        "DROP INDEX agent_sessions_ended",
        "CREATE INDEX agents_by_registered_at ON agents (registered_at)",
        "DELETE FROM schema_version WHERE version = 30",
        "DROP INDEX agents_by_registered_at",
        "DELETE FROM schema_version WHERE version = 29",
        "ALTER TABLE agents DROP COLUMN lineage",
        "DELETE FROM schema_version WHERE version = 28",
        "DROP TABLE retired_signing_keys",
        "DELETE FROM schema_version WHERE version = 27",
        "ALTER TABLE launch_tokens DROP COLUMN agent_key",
        "DELETE FROM schema_version WHERE version = 26",
        "DROP TABLE federation_feeds",
        "DELETE FROM schema_version WHERE version = 25",
        "DROP TABLE admin_credential",
        "DELETE FROM schema_version WHERE version = 24",
        "ALTER TABLE apps DROP COLUMN credential_changed_at",
        "DELETE FROM schema_version WHERE version = 23",
        "ALTER TABLE agents DROP COLUMN ceiling",
        "DELETE FROM schema_version WHERE version = 22",
        "DELETE FROM schema_version WHERE version = 21",
        "DROP TABLE revocations",
        "CREATE TABLE revocations (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " tenant_id TEXT NOT NULL, level TEXT NOT NULL, target TEXT NOT NULL,"
        " revoked_at INTEGER NOT NULL, expires_at REAL NOT NULL,"
        " UNIQUE (tenant_id, level, target)) STRICT",
        "CREATE INDEX revocations_by_expires_at ON revocations (tenant_id, expires_at)",
        "CREATE INDEX revocations_by_seq ON revocations (tenant_id, seq)",
        "DROP TABLE revocation_seqs",
        "DELETE FROM schema_version WHERE version = 20",
    ),
    "postgres": (
        "DROP INDEX agents_live",
        "DROP INDEX agents_by_app",
        "DROP INDEX agents_by_task",
        "DROP INDEX agent_sessions_ended",
        "CREATE INDEX agents_by_registered_at ON agents (registered_at)",
        "DELETE FROM schema_version WHERE version = 30",
        "DROP INDEX agents_by_registered_at",
        "DELETE FROM schema_version WHERE version = 29",
        "ALTER TABLE agents DROP COLUMN lineage",
        "DELETE FROM schema_version WHERE version = 28",
        "DROP TABLE retired_signing_keys",
        "DELETE FROM schema_version WHERE version = 27",
        "ALTER TABLE launch_tokens DROP COLUMN agent_key",
        "DELETE FROM schema_version WHERE version = 26",
        "DROP TABLE federation_feeds",
        "DELETE FROM schema_version WHERE version = 25",
        "DROP TABLE admin_credential",
        "DELETE FROM schema_version WHERE version = 24",
        "ALTER TABLE apps DROP COLUMN credential_changed_at",
        "DELETE FROM schema_version WHERE version = 23",
        "ALTER TABLE agents DROP COLUMN ceiling",
        "DELETE FROM schema_version WHERE version = 22",
        "DELETE FROM schema_version WHERE version = 21",
        "DROP TABLE revocation_seqs",
        "CREATE SEQUENCE revocation_seq AS bigint OWNED BY revocations.seq",
        "ALTER TABLE revocations ALTER COLUMN seq SET DEFAULT nextval('revocation_seq')",
        "ALTER TABLE revocations DROP CONSTRAINT revocations_pkey",
        "ALTER TABLE revocations ADD CONSTRAINT revocations_pkey PRIMARY KEY (seq)",
        "CREATE INDEX revocations_by_seq ON revocations (tenant_id, seq)",
        "DELETE FROM schema_version WHERE version = 20",
    ),
}
_BACK_TO_17 = (
    "ALTER TABLE agents DROP COLUMN attest",  # 19
    "DELETE FROM schema_version WHERE version = 19",
    "DROP TABLE audit_agent_seqs",
    "DROP TABLE audit_task_seqs",
    "DROP TABLE audit_indexed",
    "CREATE INDEX audit_events_by_agent_id ON audit_events (tenant_id, agent_id{})",
    "CREATE INDEX audit_events_by_task_id ON audit_events (tenant_id, task_id{})",
    "DELETE FROM schema_version WHERE version = 18",
)


def _sqlite_at_17(tmp_path: Path) -> tuple[Callable[[], Store], Callable[[str], list[Any]]]:
    path = tmp_path / "audit.db"

    def sql(statement: str) -> list[Any]:
        raw = sqlite3.connect(path)
        try:
            with raw:
                return raw.execute(statement).fetchall()
        finally:
            raw.close()

    return (lambda: SQLiteStore(path)), sql


def _postgres_at_17(tmp_path: Path) -> tuple[Callable[[], Store], Callable[[str], list[Any]]]:
    import pgcluster
    import psycopg

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    url = cluster.new_database("lookups")

    def sql(statement: str) -> list[Any]:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    return (lambda: PostgresStore(url)), sql


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_fills_the_lookups_for_the_events_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    make, sql = (_sqlite_at_17 if backend == "sqlite" else _postgres_at_17)(tmp_path)
    events = chain(25)
    with make() as store:
        append(store, events)
    # Back to schema version 17 with its events: the lookups as indexes of the log.
    for statement in _BACK_TO_19[backend] + _BACK_TO_17:
        sql(statement.format("" if backend == "sqlite" else ", seq"))
    monkeypatch.setattr(SQLWriteTx, "audit_index_every", 1_000_000)
    with make() as store:
        assert sql("SELECT tenant_id, seq FROM audit_indexed") == [("default", 25)]
        for table in ("audit_agent_seqs", "audit_task_seqs"):
            assert sql(f"SELECT COUNT(*), MIN(seq), MAX(seq) FROM {table}") == [(25, 1, 25)]
        more = chain(3, start=(25, events[-1].hash))
        append(store, more)
        _every_lookup(store, events + more)
        assert store.schema_version() == type(store).known_schema_version()  # type: ignore[attr-defined]
    indexes = {row[0] for row in sql(_INDEX_NAMES[backend])}
    assert not indexes & {"audit_events_by_agent_id", "audit_events_by_task_id"}
    assert "audit_events_by_event_type" in indexes
