"""One unit's failure fails only that unit, in one group-commit batch, on every backend.

Seen under faults: on PostgreSQL a NUL in one request's text made the driver raise a
``DataError`` inside its unit's savepoint; the group committer only caught the core's own
errors, so the driver's escaped and every other write of the batch answered 503. Now any
exception a unit raises (a refusal, a driver's error about a value, a server error that
aborted the transaction until the savepoint's rollback, a plain bug) is that unit's alone,
and a value the database refuses is ``InvalidRequest`` on PostgreSQL and SQLite alike.
Only the loss of the shared transaction fails the batch, and then all of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pgcluster
import pytest

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry, verify_chain
from tasklease.core.clock import ManualClock
from tasklease.core.errors import InvalidRequest, Unavailable
from tasklease.core.store import AppRecord, Store, WriteTx
from tasklease.storage import MemoryStore, SQLiteStore

N = 24
NOW = 1_800_000_000.0


def _postgres(_tmp: Path) -> Store:
    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    return PostgresStore(cluster.new_database("poison"))


BACKENDS: dict[str, Callable[[Path], Store]] = {
    "memory": lambda _tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(tmp / "t.db"),
    "postgres": _postgres,
}


def _app(i: int, *, name: str | None = None, ttl: int = 300) -> AppRecord:
    return AppRecord(
        f"app-{i}", name or f"name-{i}", f"client-{i}", "$argon2id$x", ("read:a:*",), ttl,
        "active", NOW, NOW, "admin",
    )  # fmt: skip


def _register(i: int, **kwargs: Any) -> Callable[[WriteTx], list[AuditEntry]]:
    def unit(tx: WriteTx) -> list[AuditEntry]:
        tx.insert_app(_app(i, **kwargs))
        return [AuditEntry("app_registered", detail=f"app-{i}")]

    return unit


def _one_batch(log: AuditLog, units: list[Callable[[WriteTx], Any]]) -> list[Any]:
    """Commit every unit from its own thread, all in one batch; each one's outcome."""
    outcomes: list[Any] = [None] * len(units)

    def call(i: int) -> None:
        try:
            outcomes[i] = log.commit(units[i])
        except Exception as exc:  # noqa: BLE001 - sorted out by the test
            outcomes[i] = exc

    with log._lock:  # take the leader's seat while everybody queues
        log._leading = True
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(units))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(log._queue) < len(units) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(log._queue) == len(units)
    with log._lock:  # hand the seat to the first waiter: it leads the whole queue
        log._queue[0].wake.set()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _bug(tx: WriteTx) -> list[AuditEntry]:
    tx.insert_app(_app(999))
    raise RuntimeError("a bug in one operation")


POISONS: dict[str, tuple[Callable[[WriteTx], Any], type[Exception], set[str]]] = {
    # A value no integer column holds: sqlite3 refuses it before SQLite sees it;
    # PostgreSQL fails the statement, which aborts the transaction until the savepoint.
    "integer out of range": (_register(999, ttl=2**70), InvalidRequest, {"sqlite", "postgres"}),
    # NUL in text: psycopg refuses it (SQLite and the memory store keep it).
    "NUL in text": (_register(999, name="bad\x00name"), InvalidRequest, {"postgres"}),
    "a bug": (_bug, RuntimeError, {"memory", "sqlite", "postgres"}),
}


CASES = [
    pytest.param(backend, poison, id=f"{backend}: {poison}")
    for poison, (_, _, backends) in POISONS.items()
    for backend in BACKENDS
    if backend in backends
]


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = BACKENDS[request.param](tmp_path)
    yield opened
    opened.close()


@pytest.mark.parametrize(("store", "poison"), CASES, indirect=["store"])
def test_a_poisoned_unit_fails_alone_in_its_batch(store: Store, poison: str) -> None:
    unit, error, _ = POISONS[poison]
    batches: list[int] = []
    log = AuditLog(store, ManualClock(NOW), on_batch=lambda size, _s: batches.append(size))
    units: list[Callable[[WriteTx], Any]] = [_register(i) for i in range(N)]
    units.insert(N // 2, unit)
    outcomes = _one_batch(log, units)
    log.close()

    assert batches == [N + 1]  # one transaction held them all
    poisoned = outcomes.pop(N // 2)
    assert isinstance(poisoned, error), poisoned
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert failed == [], failed[:3]
    assert sorted(app.app_id for app in store.list_apps()) == sorted(f"app-{i}" for i in range(N))
    assert store.get_app("app-999") is None  # the poisoned unit's write was undone
    events = list(store.iter_audit())
    assert len(events) == N
    assert verify_chain(events).ok


def test_a_lost_transaction_fails_the_whole_batch_and_keeps_nothing(tmp_path: Path) -> None:
    """PostgreSQL ends the connection under a unit: nothing of the batch may be kept,
    not even the units that ran before it (their writes died with the transaction)."""
    store = _postgres(tmp_path)
    try:
        log = AuditLog(store, ManualClock(NOW))

        def kill_own_connection(tx: WriteTx) -> list[AuditEntry]:
            tx.insert_app(_app(999))
            tx._db().execute("SELECT pg_terminate_backend(pg_backend_pid())")  # type: ignore[attr-defined]
            return [AuditEntry("never")]

        units: list[Callable[[WriteTx], Any]] = [_register(i) for i in range(6)]
        units.insert(3, kill_own_connection)
        outcomes = _one_batch(log, units)
        log.close()
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        assert store.list_apps() == []
        assert store.audit_head()[0] == 0
        # The store goes on: the next transaction gets a live connection.
        fresh = AuditLog(store, ManualClock(NOW))
        assert fresh.commit(_register(1))[0].seq == 1
        fresh.close()
    finally:
        store.close()


def test_sqlite_never_writes_outside_a_transaction_it_lost(tmp_path: Path) -> None:
    """SQLite rolls a whole transaction back on a full disk or an I/O error; a following
    SAVEPOINT would silently begin a new transaction, and its writes would then commit
    without the batch's audit events. The store refuses instead."""
    store = SQLiteStore(tmp_path / "t.db")
    try:
        log = AuditLog(store, ManualClock(NOW))

        def rolled_back_under_us(tx: WriteTx) -> list[AuditEntry]:
            tx.insert_app(_app(999))
            tx._db().execute("ROLLBACK")  # type: ignore[attr-defined]  # as SQLITE_FULL does
            raise OSError("database or disk is full")

        units: list[Callable[[WriteTx], Any]] = [_register(i) for i in range(6)]
        units.insert(3, rolled_back_under_us)
        outcomes = _one_batch(log, units)
        log.close()
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        assert store.list_apps() == []
        assert store.audit_head()[0] == 0
    finally:
        store.close()
