"""The audit head row lock on PostgreSQL: taken once per transaction, and taken again
after a savepoint that took it rolls back.

The lock orders revocation ``seq``s and audit appends across replicas; a transaction
that already holds it must not spend a round trip asking again, and must not believe it
holds it once a rollback has released it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import errors as pg_errors

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry
from tasklease.core.clock import ManualClock
from tasklease.core.store import RevocationRecord
from tasklease.storage._pg_tx import PostgresWriteTx
from tasklease.storage.postgres import PostgresStore

_LOCK_NOWAIT = "SELECT seq FROM audit_head WHERE tenant_id = 'default' FOR UPDATE NOWAIT"


class _Undo(Exception):
    """Raised inside a savepoint to roll it back."""


def _record(target: str) -> RevocationRecord:
    return RevocationRecord("token", target, int(time.time()), time.time() + 600)


@pytest.fixture
def locks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every head lock statement a PostgreSQL write transaction sends (its depth)."""
    sent: list[int] = []
    original = PostgresWriteTx._lock_head

    def counting(self: PostgresWriteTx) -> tuple[int, str]:
        sent.append(self._depth)
        return original(self)

    monkeypatch.setattr(PostgresWriteTx, "_lock_head", counting)
    return sent


@contextmanager
def _other(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def _held_elsewhere(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether another transaction holds the head row lock (asked without waiting)."""
    try:
        with conn.transaction():
            conn.execute(_LOCK_NOWAIT)
    except pg_errors.LockNotAvailable:
        return True
    return False


def test_a_group_commit_of_revocations_locks_the_head_once(pg_url: str, locks: list[int]) -> None:
    store = PostgresStore(pg_url)
    try:
        log = AuditLog(store, ManualClock())
        with log._lock:  # take the leader's seat while the units queue
            log._leading = True

        def revoke(i: int) -> None:
            def unit(tx: object) -> list[AuditEntry]:
                tx.insert_revocation(_record(f"jti-{i}"))  # type: ignore[attr-defined]
                return [AuditEntry("token_revoked", detail=f"jti-{i}")]

            log.commit(unit)

        threads = [threading.Thread(target=revoke, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(log._queue) < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(log._queue) == 5
        with log._lock:  # the first waiter leads the whole queue: one transaction
            log._queue[0].wake.set()
        for t in threads:
            t.join(timeout=10)
        # Five revocations and five audit events: one lock, taken before the first unit.
        assert locks == [0]
        seqs = [r.seq for r in store.revocations_since(0)]
        assert len(seqs) == 5 and seqs == sorted(seqs)
        assert store.audit_head()[0] == 5
    finally:
        store.close()


def test_a_rolled_back_savepoint_gives_the_lock_back_and_it_is_taken_again(
    pg_url: str, locks: list[int]
) -> None:
    store = PostgresStore(pg_url)
    try:
        with store.write() as tx, _other(pg_url) as other:
            assert not _held_elsewhere(other)
            with pytest.raises(_Undo), tx.savepoint():
                tx.insert_revocation(_record("undone"))
                assert _held_elsewhere(other)
                raise _Undo
            # The rollback released the row lock with the savepoint's writes.
            assert not _held_elsewhere(other)
            with tx.savepoint():
                tx.insert_revocation(_record("kept"))
            assert _held_elsewhere(other)
            with tx.savepoint():
                tx.insert_revocation(_record("kept-too"))  # held: not asked again
        assert locks == [1, 1]
        assert [r.target for r in store.revocations_since(0)] == ["kept", "kept-too"]
    finally:
        store.close()
