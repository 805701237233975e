"""What only the SQLite store promises: a file, durability, schema versions, processes.

Also ``open_store`` URL handling and the package's public surface.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import tasklease.storage
from tasklease.core.clock import format_rfc3339
from tasklease.core.errors import Conflict, Unavailable
from tasklease.core.store import (
    AgentRecord,
    AppRecord,
    AuditEvent,
    AuditQuery,
    LaunchTokenRecord,
    RevocationRecord,
)
from tasklease.storage import MemoryStore, SchemaError, SQLiteStore, open_store

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as ProcessEvent

NOW = 1_800_000_000.0

# Small record factories (the conformance suite has richer ones; test modules do not
# import each other, so that any pytest import mode works).


def make_app() -> AppRecord:
    return AppRecord(
        "app-1",
        "name-1",
        "client-1",
        "$argon2id$x",
        ("read:a:*",),
        300,
        "active",
        NOW,
        NOW,
        "admin",
    )


def make_launch_token() -> LaunchTokenRecord:
    return LaunchTokenRecord("ab" * 32, "agent", ("read:a:*",), 300, True, NOW, NOW + 30, "admin")


def make_agent() -> AgentRecord:
    return AgentRecord(
        "spiffe://example.org/agent/o/t/i",
        bytes(32),
        "o",
        "t",
        ("read:a:*",),
        "app-1",
        "client-1",
        NOW,
    )


def _chain_hash(prev: str, seq: int) -> str:
    return hashlib.sha256(f"{prev}|{seq}".encode()).hexdigest()


def make_event(seq: int, prev: str, *, worker: int = 0) -> AuditEvent:
    return AuditEvent(
        seq=seq,
        timestamp=format_rfc3339(NOW + seq),
        event_type="test_append",
        agent_id=f"worker-{worker}",
        task_id="task",
        orch_id="orch",
        detail=f"event {seq}",
        resource="",
        outcome="success",
        deleg_depth=0,
        deleg_chain_hash="",
        request_id=f"w{worker}-{seq}",
        prev_hash=prev,
        hash=_chain_hash(prev, seq),
    )


def chain(count: int, *, start: tuple[int, str] = (0, "0" * 64)) -> list[AuditEvent]:
    seq, prev = start
    events = []
    for _ in range(count):
        seq += 1
        events.append(make_event(seq, prev))
        prev = events[-1].hash
    return events


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tasklease.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(db_path) as opened:
        yield opened


# -- the file -------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    token = make_launch_token()
    events = chain(3)
    with SQLiteStore(db_path) as first, first.write() as tx:
        tx.insert_app(make_app())
        tx.insert_launch_token(token)
        tx.consume_launch_token(token.token_hash, NOW)
        tx.consume_nonce("n", NOW + 30)
        tx.insert_agent(make_agent())
        tx.insert_revocation(RevocationRecord("agent", "a", 1, NOW + 60))
        tx.append_audit(events)
    with SQLiteStore(db_path, migrate=False) as second:
        assert second.get_app("app-1") == make_app()
        assert second.get_launch_token(token.token_hash) == replace(token, consumed_at=NOW, uses=1)
        assert second.get_agent(make_agent().agent_id) == make_agent()
        assert [r.target for r in second.load_revocations(NOW)] == ["a"]
        assert list(second.iter_audit()) == events
        assert second.audit_head() == (3, events[-1].hash)
        with second.write() as tx:
            assert tx.consume_nonce("n", NOW + 30) is False


def test_file_is_private_and_parent_is_created(db_path: Path, store: SQLiteStore) -> None:
    assert not db_path.parent.exists() or db_path.parent.is_dir()
    with store.write() as tx:
        tx.insert_app(make_app())
    for path in (db_path, Path(f"{db_path}-wal")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_wal_mode_is_on(db_path: Path, store: SQLiteStore) -> None:
    probe = sqlite3.connect(db_path)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        probe.close()


def test_refuses_non_file_paths(tmp_path: Path) -> None:
    for bad in ("", ":memory:", "file:x.db?mode=memory"):
        with pytest.raises(ValueError):
            SQLiteStore(bad)


# -- schema versions ------------------------------------------------------------------------


def test_migrate_is_idempotent(db_path: Path, store: SQLiteStore) -> None:
    assert store.schema_version() == SQLiteStore.known_schema_version() >= 1
    assert store.migrate() == []
    with SQLiteStore(db_path) as again:
        assert again.schema_version() == SQLiteStore.known_schema_version()


def test_newer_schema_is_refused(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    known = SQLiteStore.known_schema_version()
    newer = known + 1
    raw = sqlite3.connect(db_path)
    with raw:
        raw.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'x', 0)", (newer,)
        )
    raw.close()
    message = (
        f"database schema version {newer} is newer than this tasklease (knows {known}): "
        "upgrade tasklease"
    )
    for migrate in (True, False):
        with pytest.raises(SchemaError) as caught:
            SQLiteStore(db_path, migrate=migrate)
        assert str(caught.value) == message


def test_unmigrated_database_with_migrate_false_is_refused(db_path: Path) -> None:
    with pytest.raises(SchemaError, match="run `tasklease db migrate`"):
        SQLiteStore(db_path, migrate=False)
    with SQLiteStore(db_path) as migrated:  # the same file, migrated on open
        assert migrated.schema_version() == SQLiteStore.known_schema_version()
    SQLiteStore(db_path, migrate=False).close()


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.slow
def test_racing_threads_consume_a_launch_token_once(store: SQLiteStore) -> None:
    token = make_launch_token()
    with store.write() as tx:
        tx.insert_launch_token(token)
    barrier = threading.Barrier(20)
    results: list[bool] = []

    def consume() -> None:
        barrier.wait()
        with store.write() as tx:
            results.append(tx.consume_launch_token(token.token_hash, NOW))

    threads = [threading.Thread(target=consume) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 19 + [True]


@pytest.mark.slow
def test_reads_from_many_threads_while_writing(store: SQLiteStore) -> None:
    append_count = 50
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                seq, _ = store.audit_head()
                events, total = store.query_audit(AuditQuery(limit=1000))
                assert total >= seq
                assert [e.seq for e in events] == list(range(1, total + 1))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    head = (0, "0" * 64)
    for _ in range(append_count):
        (event,) = chain(1, start=head)
        with store.write() as tx:
            tx.append_audit([event])
        head = (event.seq, event.hash)
    done.set()
    for reader in readers:
        reader.join()
    assert errors == []
    assert store.audit_head() == head


def test_busy_database_fails_closed(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    with SQLiteStore(db_path, busy_timeout=0.05) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(Unavailable), store.write() as tx:
                tx.insert_app(make_app())
            other.execute("ROLLBACK")
        finally:
            other.close()
        with store.write() as tx:
            tx.insert_app(make_app())
        assert store.get_app("app-1") == make_app()


def test_a_write_waits_no_longer_than_its_busy_timeout_behind_this_processs_writers(
    db_path: Path,
) -> None:
    # Seen with the database locked by another process (a `BEGIN EXCLUSIVE` held by a
    # sqlite3 shell): each writer of the broker's own (the group committer, the readiness
    # check, housekeeping) waited its busy_timeout for SQLite's lock in turn, while the
    # others queued on the store's in-process lock without a bound, so a request waited
    # 20 to 30 s for its 503 behind a 5 s busy_timeout.
    import time

    SQLiteStore(db_path).close()
    busy = 0.3
    with SQLiteStore(db_path, busy_timeout=busy) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        took: list[float] = []
        failed: list[BaseException] = []

        def write() -> None:
            started = time.monotonic()
            try:
                with store.write():
                    pass
            except Unavailable as exc:
                failed.append(exc)
            took.append(time.monotonic() - started)

        try:
            other.execute("BEGIN EXCLUSIVE")
            writers = [threading.Thread(target=write) for _ in range(8)]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(30)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert len(failed) == 8
        # Its turn in this process, then SQLite's lock: each within busy_timeout.
        assert max(took) < 2 * busy + 0.5, sorted(took)
        with store.write() as tx:  # the lock gone, writes go on
            tx.insert_app(make_app())


def test_a_read_sqlite_cannot_make_is_unavailable(db_path: Path) -> None:
    # Seen with the database file replaced under a running broker: reads on a thread
    # that opened its connection afterwards raised sqlite3.DatabaseError ("file is not
    # a database"), which the routes answered 500 "internal error" with a traceback.
    with SQLiteStore(db_path) as store:
        with store.write() as tx:
            tx.insert_app(make_app())
        garbage = db_path.with_name("garbage")
        garbage.write_bytes(b"\x01" * 8192)
        os.replace(garbage, db_path)
        for name in ("-wal", "-shm"):
            db_path.with_name(db_path.name + name).unlink(missing_ok=True)
        raised: list[BaseException] = []

        def read() -> None:
            for call in (
                lambda: store.get_app("app-1"),
                store.audit_head,
                lambda: store.find_revocations([("agent", "x")]),
            ):
                try:
                    call()
                except BaseException as exc:  # noqa: BLE001 - what it raised is the point
                    raised.append(exc)

        reader = threading.Thread(target=read)  # a new thread: a new reader connection
        reader.start()
        reader.join(10)
        assert [type(exc) for exc in raised] == [Unavailable] * 3, raised
        assert all(exc.retry_after for exc in raised if isinstance(exc, Unavailable))


def _probe_held(path: Path) -> bool:
    """True while some store holds a lock on ``path`` (as another process would see it)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def _wait_until(predicate: object, what: str) -> None:
    import time

    deadline = time.monotonic() + 10
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_a_writer_that_releases_its_turn_lets_a_waiting_one_go_first(db_path: Path) -> None:
    """Two stores on one file stand for two processes (each has its own lock files)."""
    SQLiteStore(db_path).close()
    waitfile = Path(f"{db_path}.writewait")
    with SQLiteStore(db_path) as first, SQLiteStore(db_path) as second:
        first._turns._stand_back = 30.0  # long enough that only the fairness rule can decide
        order: list[str] = []
        holding = first.write()
        holding.__enter__()  # first holds the turn

        def other() -> None:
            with second.write():
                order.append("second")

        waiter = threading.Thread(target=other)
        waiter.start()
        _wait_until(lambda: _probe_held(waitfile), "the second store to announce it waits")
        holding.__exit__(None, None, None)  # first releases with a waiter announced ...
        with first.write():  # ... and asks again at once: the waiter goes first
            order.append("first again")
        waiter.join(10)
        assert order == ["second", "first again"]


def test_standing_back_is_bounded(db_path: Path) -> None:
    """A waiter that never takes its turn (here: a bare lock) delays the releaser briefly."""
    import fcntl

    SQLiteStore(db_path).close()
    with SQLiteStore(db_path) as store:
        store._turns._stand_back = 0.05
        with store.write() as tx:
            tx.insert_app(make_app())
        fd = os.open(f"{db_path}.writewait", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # someone "waits" forever
            with store.write() as tx:  # releases with the waiter announced
                tx.insert_app(replace(make_app(), app_id="app-2", name="n2", client_id="client-2"))
            for n in range(3, 6):  # each stands back for at most 50 ms, then goes on
                with store.write() as tx:
                    tx.insert_app(
                        replace(make_app(), app_id=f"app-{n}", name=f"n{n}", client_id=f"c{n}")
                    )
            # The waiter never came, three times running: no standing back for a while.
            assert store._turns._stand_back_after > 0
        finally:
            os.close(fd)
    with SQLiteStore(db_path) as store:
        assert {a.app_id for a in store.list_apps()} == {f"app-{n}" for n in range(1, 6)}


def _append_worker(path: str, worker: int, count: int, start: ProcessEvent) -> None:
    """One OS process appending ``count`` events, each in its own transaction."""
    with SQLiteStore(path) as store:
        start.wait()
        for _ in range(count):
            with store.write() as tx:
                seq, prev = tx.audit_head()
                tx.append_audit([make_event(seq + 1, prev, worker=worker)])


@pytest.mark.slow
def test_two_processes_extend_one_unbroken_chain(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteStore(db_path).close()  # create and migrate before the race
    # A spawned child imports _append_worker by its module name, which depends on
    # pytest's import mode ("test_sqlite" or "tests.storage.test_sqlite"): put the
    # directory that name is relative to on sys.path, which the child inherits.
    depth = len(_append_worker.__module__.split("."))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[depth - 1]))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [
        ctx.Process(target=_append_worker, args=(str(db_path), n, 200, start)) for n in (1, 2)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=90)
    assert [w.exitcode for w in workers] == [0, 0]

    with SQLiteStore(db_path) as store:
        events = list(store.iter_audit(batch=64))
    assert [e.seq for e in events] == list(range(1, 401))
    prev = "0" * 64
    for event in events:
        assert event.prev_hash == prev
        assert event.hash == _chain_hash(prev, event.seq)
        prev = event.hash
    for n in (1, 2):
        assert sum(e.agent_id == f"worker-{n}" for e in events) == 200


# -- open_store and the public surface ------------------------------------------------------


def test_open_store_urls(tmp_path: Path) -> None:
    plain = open_store(str(tmp_path / "a.db"))
    assert isinstance(plain, SQLiteStore)
    plain.close()
    url = open_store(f"sqlite://{tmp_path}/dir with space/b.db")
    assert isinstance(url, SQLiteStore)
    assert url.path == tmp_path / "dir with space" / "b.db"
    url.close()
    memory = open_store("memory://")
    assert isinstance(memory, MemoryStore)
    memory.close()


def test_open_store_unmigrated_with_migrate_false(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        open_store(str(tmp_path / "a.db"), migrate=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/x", "unsupported store URL scheme"),
        ("sqlite://host/x.db", "sqlite:///absolute/path"),
        ("sqlite:///", "sqlite:///absolute/path"),
        ("memory://x", "memory://"),
        ("", "empty"),
    ],
)
def test_open_store_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        open_store(url)


def test_public_surface() -> None:
    assert sorted(tasklease.storage.__all__) == [
        "MemoryStore",
        "SQLiteStore",
        "SchemaError",
        "is_shared_database",
        "open_store",
        "postgres_url_problem",
        "redact_url",
    ]


def test_an_event_without_a_timestamp_is_refused(store: SQLiteStore) -> None:
    event = replace(chain(1)[0], timestamp="")
    with pytest.raises(ValueError), store.write() as tx:
        tx.append_audit([event])
    assert store.audit_head()[0] == 0


def test_a_failed_insert_does_not_leave_a_stale_head_behind(store: SQLiteStore) -> None:
    events = chain(2)
    broken = replace(events[1], detail=None)  # type: ignore[arg-type]  # NOT NULL column
    with store.write() as tx:
        tx.audit_head()
        with pytest.raises(sqlite3.IntegrityError):
            tx.append_audit([events[0], broken])
        # Row 1 went in before the failure: the head is read again, not guessed.
        with pytest.raises(Conflict):
            tx.append_audit(events[:1])
        tx.append_audit(events[1:])
    assert store.audit_head() == (2, events[1].hash)
