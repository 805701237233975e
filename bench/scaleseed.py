"""Seeding a SQLite broker database with registered agents, audit events (their chain and
Merkle tree) and live revocations in bulk, straight through the store: ``bench.scale``.

Rows go in through the store's own write transactions (``insert_agent``,
``append_audit`` with ``append_audit_tree``, ``insert_revocation``) in large batches, so
they are exactly what the broker writes, at bulk speed instead of one request each. The
audit table's secondary indexes are dropped while the events go in and built again
afterwards (one sort each instead of millions of scattered inserts), then analyzed: the
database ends with the schema the migrations made and the planner's statistics.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

AGENT_BATCH = 20_000
EVENT_BATCH = 50_000
REVOCATION_BATCH = 20_000


def agent_id(i: int) -> str:
    """The SPIFFE ID of seeded agent ``i`` (the measuring process looks agents up by it)."""
    return f"spiffe://tasklease.local/agent/seed/t{i % 9973}/{i:016x}"


def seed(path: Path, *, agents: int, events: int, revocations: int, now: float) -> dict[str, Any]:
    """Create and migrate the database at ``path`` and fill it; return what it took."""
    from tasklease.storage import SQLiteStore

    SQLiteStore(path).close()  # the schema, by the migrations
    took: dict[str, Any] = {}
    dropped = _drop_audit_indexes(path)
    store = SQLiteStore(path)
    try:
        t0 = time.perf_counter()
        _agents(store, agents, now)
        took["agents_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        _events(store, events, agents, now)
        took["events_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        _revocations(store, revocations, now)
        took["revocations_s"] = round(time.perf_counter() - t0, 2)
    finally:
        store.close()
    t0 = time.perf_counter()
    _create(path, dropped)
    took["indexes_s"] = round(time.perf_counter() - t0, 2)
    took["db_mb"] = round(_size(path) / 1e6, 1)
    return took


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _drop_audit_indexes(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'audit_events' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in rows:
            conn.execute(f'DROP INDEX "{name}"')
        conn.commit()
        return [sql for _, sql in rows]
    finally:
        conn.close()


def _create(path: Path, statements: list[str]) -> None:
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            conn.execute(sql)
        # Statistics for every index, as a broker that ran a while has them (its store runs
        # PRAGMA optimize on close). Without them the planner can take a filter index that
        # starts with tenant_id for the audit head's ORDER BY seq DESC and sort the table.
        conn.execute("PRAGMA analysis_limit = 2000")
        conn.execute("ANALYZE")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _agents(store: Any, total: int, now: float) -> None:
    from tasklease.core.store import AgentRecord

    key = bytes(range(32))
    for lo in range(0, total, AGENT_BATCH):
        with store.write() as tx:
            for i in range(lo, min(total, lo + AGENT_BATCH)):
                tx.insert_agent(
                    AgentRecord(
                        agent_id=agent_id(i),
                        public_key=key,
                        orch_id="seed",
                        task_id=f"t{i % 9973}",
                        scope=("read:data:*",),
                        app_id="",
                        client_id="admin",
                        registered_at=now - 86_400 + i * 1e-3,
                    )
                )


def _events(store: Any, total: int, agents: int, now: float) -> None:
    """``total`` format-2 events, chained and in the Merkle tree, about registered agents."""
    from tasklease.core.auditformat import GENESIS_HASH, event_hash
    from tasklease.core.audittree import append_leaves
    from tasklease.core.clock import format_rfc3339
    from tasklease.core.store import AuditEvent
    from tasklease.rules.auditchain import event_leaf

    prev, seq, tree = GENESIS_HASH, 0, None
    start = now - 86_400
    kinds = ("token_issued", "token_validated", "token_renewed", "delegation_created")
    span = max(agents, 1)
    while seq < total:
        rows = []
        timestamp = format_rfc3339(start + seq * 86_400 / max(total, 1))
        for _ in range(min(EVENT_BATCH, total - seq)):
            seq += 1
            who = seq % span
            fields = {
                "seq": seq, "timestamp": timestamp, "event_type": kinds[seq % 4],
                "agent_id": agent_id(who), "task_id": f"t{who % 9973}", "orch_id": "seed",
                "detail": f"Token issued, jti={seq:032x}, ttl=300", "resource": "",
                "outcome": "success", "deleg_depth": 0, "deleg_chain_hash": "",
                "request_id": f"{seq:016x}", "prev_hash": prev, "app_id": "",
                "principal_ref": f"{seq % 13:016x}", "version": 2,
            }  # fmt: skip
            prev = event_hash(prev, seq, timestamp, AuditEvent(hash="", **fields))
            rows.append(AuditEvent(hash=prev, **fields))
        tree, tiles = append_leaves(tree, [event_leaf(e.hash) for e in rows])
        with store.write() as tx:
            tx.append_audit(rows)
            tx.append_audit_tree(tree, tiles)


def _revocations(store: Any, total: int, now: float) -> None:
    """``total`` token-level revocations in force (they expire in 30 days)."""
    from tasklease.core.store import RevocationRecord

    expires = now + 30 * 86_400
    for lo in range(0, total, REVOCATION_BATCH):
        with store.write() as tx:
            for i in range(lo, min(total, lo + REVOCATION_BATCH)):
                tx.insert_revocation(RevocationRecord("token", f"seed{i:028x}", int(now), expires))
