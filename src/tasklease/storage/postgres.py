"""The scale-out store: PostgreSQL through psycopg 3 and a ``psycopg_pool`` connection pool.

Several broker replicas share one database. What must hold across replicas is enforced
by the database, never by a process-local lock:

* A single-use launch token is consumed by one conditional ``UPDATE``; a
  nonce by ``INSERT ... ON CONFLICT DO NOTHING``; app names and client ids, agent ids and
  launch token hashes by unique constraints. Exactly one of any number of concurrent
  callers, on any replica, wins.
* The audit log stays one chain: the head (last seq and hash) lives in a one-row table
  that every appending transaction locks with ``SELECT ... FOR UPDATE`` before it reads
  it. The core's group committer asks for the head once per batch, so replicas take turns
  per batch, not per event.
* Revocation ``seq`` values are each tenant's own (``revocation_seqs``), drawn while
  holding that same lock, so they commit in increasing order and a reader of
  ``revocations_since(last)`` never skips an entry that committed late with a smaller
  number.

Transactions run at READ COMMITTED on autocommit connections with explicit ``BEGIN``
/``COMMIT``; savepoints give each unit of a batch its own undo (``_pg_tx``, the write
transaction). A statement that fails inside a unit's savepoint (a value the server
refuses, the driver's refusal of NUL in text) is rolled back to it and fails that unit
only; a refused value becomes ``InvalidRequest``, as on SQLite.

Bounded waits (``_pg_guard``): every connection carries a statement timeout, a lock
timeout and TCP keepalives, every call a client-side deadline (a frozen server enforces
no timeout of its own), and after the database stopped answering calls fail at once for
a second instead of each waiting out its deadline. Storage failures are ``Unavailable``
with ``retry_after``.

Change notification (the optional ``start_watch`` capability, see ``core.store``): a
transaction that stores a revocation sends ``pg_notify`` just before it commits, with
the highest seq, the commit's wall-clock time and the sending store's origin id; the
notification is delivered only if the commit succeeds. A watch holds one dedicated
connection that LISTENs on the channel from a background thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tasklease.core import readahead
from tasklease.core.errors import TaskleaseError, Unavailable
from tasklease.core.readahead import refuse as refuse_on_loop
from tasklease.core.store import RevocationRecord
from tasklease.storage._pg_ahead import LoopReads
from tasklease.storage._pg_guard import TRIAL_DEADLINE, Limits, Outage, Timer, Watchdog
from tasklease.storage._pg_tx import DIALECT, PostgresWriteTx, statements, unit_error
from tasklease.storage._pg_watch import NOTIFY_CHANNEL, RevocationWatch
from tasklease.storage._sql import (
    GENESIS_HASH,
    Migration,
    Row,
    SharedState,
    SQLStore,
    migration_failed,
    newer_error,
    revocation_from_row,
)
from tasklease.storage.urls import redact_url

__all__ = ["NOTIFY_CHANNEL", "PostgresStore"]

_log = logging.getLogger("tasklease.storage.postgres")

# pg_advisory_xact_lock key that serializes migrations from several replicas ("tlmigrat").
_MIGRATION_LOCK = 0x746C6D6967726174


def _schema_version(conn: psycopg.Connection[Row]) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


class SchemaGate:
    """Whether the database's schema moved past what this code knows while it ran.

    A newer release's ``tasklease db migrate`` under a running replica (a rolling
    upgrade) leaves it reading and writing rows, and enforcing rules, of a schema it does
    not know: it would accept what the newer code refuses. Once :meth:`note` sees a newer
    version (the watch reads it at every check-in, and every migration notifies it), each
    call fails closed (:meth:`check`) for good: the process must be replaced.
    """

    def __init__(self, known: int) -> None:
        self.known = known
        self.seen: int | None = None

    def note(self, current: int) -> None:
        if current <= self.known or self.seen is not None:
            return
        self.seen = current
        _log.error(
            "database schema version %d is newer than this tasklease (knows %d): it was "
            "migrated under this process, which now refuses every request; replace it "
            "with the upgraded release",
            current,
            self.known,
        )

    def check(self) -> None:
        """Raise ``Unavailable`` once the schema was seen newer than this code."""
        if self.seen is not None:
            raise Unavailable(
                "storage is unavailable",
                reason=f"{newer_error(self.seen, self.known)} (migrated while running)",
                retry_after=1,
            )


# -- the store ---------------------------------------------------------------------------


class PostgresStore(SQLStore):
    """:class:`tasklease.core.store.Store` on a PostgreSQL database, shareable by replicas.

    ``PostgresStore(url)`` connects, then applies pending migrations (``migrate=True``)
    or, with ``migrate=False``, refuses a database that is not at the current schema
    version (``SchemaError``: run ``tasklease db migrate``). A database newer than this
    code is always refused. Raise ``Unavailable`` if the database cannot be reached.

    ``limits`` bounds every wait (:class:`~tasklease.storage._pg_guard.Limits`): a call
    that gets no connection within ``pool_timeout``, or no answer within the statement
    timeout and half a second, fails with ``Unavailable``; after such a failure calls fail
    at once for a second, then try again with a one-second deadline until one succeeds.
    """

    dialect = DIALECT
    local_reads = False  # see Store.local_reads
    statements_on_loop = False  # network round trips

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        pool_min: int = 1,
        pool_max: int = 10,
        limits: Limits | None = None,
    ) -> None:
        self.url = url
        self._shared = SharedState()
        self._conninfo = url
        self._limits = limits = limits or Limits()
        self._connect_kwargs = limits.connect_kwargs(url)
        self._closed = False
        self._local = threading.local()
        self._origin = os.urandom(6).hex()
        self._watches: list[RevocationWatch] = []  # at most one, shared by the views
        self._watch_subscribers: list[_Subscription] = []
        self._watch_lock = threading.Lock()
        self._watchdog = Watchdog()
        self._outage = Outage()
        self._schema = SchemaGate(self.known_schema_version())
        self._purging = threading.Lock()  # one pool check at a time
        self._connect_errors = 0  # the pool's count of failed connection attempts, last seen
        # First halves' reads, made on the event loop (core.readahead).
        self._ahead = LoopReads(url, self._connect_kwargs, pool_max, limits)
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=pool_min,
            max_size=pool_max,
            timeout=limits.pool_timeout,
            kwargs={"autocommit": True, **self._connect_kwargs},
            name="tasklease",
            # Give up a reconnection attempt after 5 s rather than psycopg_pool's 5 min of
            # doubling delays: the next request starts a fresh attempt (1 s delay), so a
            # replica recovers within seconds of the database's return.
            reconnect_timeout=5.0,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=limits.connect_timeout + 1)
        except PoolTimeout as exc:
            self._pool.close()
            raise Unavailable(
                "cannot connect to PostgreSQL",
                reason=f"cannot connect to {redact_url(url)}: {exc}",
            ) from None
        try:
            if migrate:
                self.migrate()
            else:
                self._check_schema()
        except BaseException:
            self.close()
            raise

    # -- connections ---------------------------------------------------------------------

    def _checkout(
        self, *, bounded: bool = True, retry: bool = False
    ) -> tuple[contextlib.ExitStack, psycopg.Connection[Row], Timer | None]:
        """A pooled connection and the stack that gives it back.

        Fails at once during the pause after the database stopped answering. ``bounded``:
        the watchdog cuts the connection if it is still in use after the deadline (the
        statement timeout and a margin; one second while the database is not answering).
        A ``retry`` (a pooled connection was just found dead) waits one second at most
        for a connection: a server that is back gives one in milliseconds.
        """
        if self._closed:
            raise RuntimeError("store is closed")
        refuse_on_loop("a call of more than one statement")  # see _one
        self._schema.check()
        self._outage.check()
        trial = self._outage.failing
        limits = self._limits
        short = trial or retry
        wait = min(limits.pool_timeout, TRIAL_DEADLINE) if short else limits.pool_timeout
        stack = contextlib.ExitStack()
        try:
            conn = stack.enter_context(self._pool.connection(timeout=wait))
        except PoolTimeout as exc:
            stack.close()
            # No connection came: the database refuses them, or the pool is busy. Only
            # the first is an outage (a busy pool must not turn into failing fast).
            errors = self._pool.get_stats().get("connections_errors", 0)
            if short or errors > self._connect_errors:
                self._outage.fail(f"no connection within {wait:g}s")
            self._connect_errors = errors
            raise Unavailable(
                "storage is unavailable", reason=f"no connection: {exc}", retry_after=1
            ) from None
        except BaseException:
            stack.close()
            raise
        timer = None
        if bounded:
            deadline = min(limits.deadline, TRIAL_DEADLINE) if trial else limits.deadline
            timer = stack.enter_context(self._watchdog.bounded(conn, deadline))
        return stack, conn, timer

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        """A pooled connection without a deadline (migrations: an operator's command)."""
        stack, conn, _ = self._checkout(bounded=False)
        with stack:
            yield conn

    def _failure(
        self, exc: psycopg.Error, conn: psycopg.Connection[Row], timer: Timer | None
    ) -> TaskleaseError:
        """The error a caller gets for a driver's error; notes an outage when it is one."""
        if timer is not None and timer.fired:
            self._outage.fail(f"no answer within {timer.seconds:g}s")
            return Unavailable(
                f"the database did not answer within {timer.seconds:g}s",
                reason=f"connection cut after {timer.seconds:g}s: {exc}",
                retry_after=1,
            )
        if conn.broken:
            # Not an outage by itself (an ended backend, a restart): the next call takes
            # another connection, and finds out whether the server is there.
            return Unavailable("the database connection was lost", reason=str(exc), retry_after=1)
        translated = unit_error(exc)
        if isinstance(translated, TaskleaseError):
            return translated
        return Unavailable("storage error", reason=f"{type(exc).__name__}: {exc}", retry_after=1)

    def _lost_as(
        self, conn: psycopg.Connection[Row], timer: Timer | None
    ) -> Callable[[psycopg.Error], Unavailable]:
        def lost(exc: psycopg.Error) -> Unavailable:
            error = self._failure(exc, conn, timer)
            if isinstance(error, Unavailable):
                return error
            return Unavailable("storage lost the transaction", reason=error.reason, retry_after=1)

        return lost

    def _dead_on_arrival(self, conn: psycopg.Connection[Row], timer: Timer | None) -> bool:
        """The pooled connection was dead before we used it (the server restarted or
        closed it): worth one more try with a live one. Not after a deadline cut."""
        return conn.broken and not (timer is not None and timer.fired)

    def _purge_dead(self) -> None:
        """Drop the pool's dead connections (after a restart every idle one is dead).

        The pool's check talks to each idle connection with no deadline of ours, so it
        runs on a thread of its own and we wait for it one second at most.
        """
        if not self._purging.acquire(blocking=False):
            return  # another caller is at it

        def check() -> None:
            try:
                self._pool.check()
            except Exception as exc:  # noqa: BLE001 - a failed check only means no purge
                _log.debug("pool check failed: %s", exc)
            finally:
                self._purging.release()

        worker = threading.Thread(target=check, name="tasklease-pg-check", daemon=True)
        worker.start()
        worker.join(TRIAL_DEADLINE)

    def _read(self, work: Callable[[psycopg.Connection[Row]], Any]) -> Any:
        """Run a read within the deadline; past a dead pooled connection, once more."""
        for attempt in (1, 2):
            stack, conn, timer = self._checkout(retry=attempt == 2)
            with stack:
                try:
                    result = work(conn)
                except psycopg.Error as exc:
                    retry = attempt == 1 and self._dead_on_arrival(conn, timer)
                    error = None if retry else self._failure(exc, conn, timer)
                else:
                    self._outage.recover()
                    return result
            if error is not None:
                raise error from None
            self._purge_dead()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema --------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""
        return int(self._read(_schema_version))

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied.

        Safe to run from several replicas at once: each migration transaction takes one
        advisory lock and re-reads the version under it. Raise ``SchemaError`` if the
        database is newer than this code or a migration fails. No statement or lock
        timeout applies: a migration may rewrite a large table, or wait for replicas.
        """
        migrations = DIALECT.migrations()
        known = len(migrations)
        applied: list[int] = []
        with self._connection() as conn:
            for migration in migrations:
                if self._apply(conn, migration, known):
                    applied.append(migration.version)
        return applied

    def _apply(self, conn: psycopg.Connection[Row], migration: Migration, known: int) -> bool:
        try:
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = 0")
                conn.execute("SET LOCAL lock_timeout = 0")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at double precision NOT NULL)"
                )
                current = _schema_version(conn)
                if current > known:
                    raise newer_error(current, known)
                if current >= migration.version:
                    return False
                # A migration file holds several statements and no parameters: psycopg
                # sends it as one simple query, inside this transaction.
                conn.execute(migration.sql.encode("utf-8"))
                conn.execute(
                    DIALECT.record_migration, (migration.version, migration.name, time.time())
                )
                # Delivered at commit: running replicas' watches read the new version at
                # once, and those that do not know it stop serving (SchemaGate).
                conn.execute(
                    "SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"schema {migration.version}")
                )
        except psycopg.Error as exc:
            raise migration_failed(migration, exc) from exc
        return True

    # -- writes --------------------------------------------------------------------------

    def _begin(
        self,
    ) -> tuple[contextlib.ExitStack, psycopg.Connection[Row], Timer | None]:
        """A connection with a transaction begun; once more past a dead pooled connection."""
        for attempt in (1, 2):
            stack, conn, timer = self._checkout(retry=attempt == 2)
            try:
                conn.execute("BEGIN")
            except psycopg.Error as exc:
                retry = attempt == 1 and self._dead_on_arrival(conn, timer)
                error = None if retry else self._failure(exc, conn, timer)
                stack.close()
                if error is not None:
                    raise error from None
                self._purge_dead()
                continue
            except BaseException:
                stack.close()
                raise
            return stack, conn, timer
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def write(self) -> Iterator[PostgresWriteTx]:
        """One transaction: commit on a clean exit, roll back everything on an exception.

        Raise ``Unavailable`` if no connection can be had, the database does not answer
        within the deadline, the transaction was lost or the commit fails. Not reentrant
        within a thread: ``write()`` inside ``write()`` raises ``RuntimeError``.
        Transactions on different threads (and replicas) run concurrently; those that
        append audit events or revocations take turns on the head lock.
        """
        if getattr(self._local, "writing", False):
            raise RuntimeError("write() is not reentrant: use the open transaction")
        if self._closed:
            raise RuntimeError("store is closed")
        self._local.writing = True
        try:
            stack, conn, timer = self._begin()
            with stack:
                tx = PostgresWriteTx(conn, self.dialect, self._lost_as(conn, timer))
                try:
                    yield tx
                except psycopg.Error as exc:
                    # A statement outside any unit (the audit head, the append) failed.
                    tx._end()
                    _rollback_quietly(conn)
                    raise self._failure(exc, conn, timer) from exc
                except BaseException:
                    tx._end()
                    _rollback_quietly(conn)
                    raise
                tx._end()
                if tx.lost is not None:  # never commit what is left of a lost transaction
                    _rollback_quietly(conn)
                    raise tx.lost
                try:
                    if tx.notify_seq:
                        # Sent at commit: delivered to listeners only if the commit holds.
                        payload = f"{tx.notify_seq} {time.time():.6f} {self._origin}"
                        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))
                    conn.execute("COMMIT")
                except psycopg.Error as exc:
                    _rollback_quietly(conn)
                    error = self._failure(exc, conn, timer)
                    if not isinstance(error, Unavailable):
                        error = Unavailable(
                            "storage could not commit",
                            reason=f"COMMIT failed: {exc}",
                            retry_after=1,
                        )
                    raise error from exc
                self._outage.recover()
        finally:
            self._local.writing = False

    def check_writable(self) -> None:
        """Raise ``Unavailable`` unless the database answers and takes writes (for
        readiness): not during an outage, not on a read-only server (a standby, or
        ``default_transaction_read_only``). Bounded by the deadline."""

        def probe(conn: psycopg.Connection[Row]) -> bool:
            row = conn.execute(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
            ).fetchone()
            return bool(row and row[0])

        if self._read(probe):
            raise Unavailable("the database is read-only", retry_after=1)

    # -- reads ---------------------------------------------------------------------------

    async def read_ahead(self, query: object) -> Any:
        """See ``Store.read_ahead``: ``query`` as :meth:`_one` and :meth:`_all` make it."""
        self._schema.check()
        return await self._ahead.fetch(self._outage, query)

    # Under a read-ahead run (a first half on the event loop), a read of one statement is
    # answered by the run or stops it (core.readahead); anything else runs in a thread.
    def server_time(self) -> float | None:
        """The server's wall clock (``clock_timestamp()``: now, not the transaction's start)."""
        row = self._one("SELECT extract(epoch FROM clock_timestamp())::float8", ())
        return None if row is None else float(row[0])

    def _one(self, sql: str, params: Row) -> Row | None:
        if readahead.active():
            found: Row | None = readahead.answer(("one", sql, params))
            return found
        row: Row | None = self._read(lambda conn: conn.execute(sql, params).fetchone())
        return row

    def _all(self, sql: str, params: Row = ()) -> list[Row]:
        if readahead.active():
            found: list[Row] = readahead.answer(("all", sql, params))
            return found
        rows: list[Row] = self._read(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    def _count_and_page(
        self, count_sql: str, count_params: list[object], page_sql: str, page_params: list[object]
    ) -> tuple[int, list[Row]]:
        def work(conn: psycopg.Connection[Row]) -> tuple[int, list[Row]]:
            # Count and page from one snapshot.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                counted = conn.execute(count_sql, count_params).fetchone()
                rows = conn.execute(page_sql, page_params).fetchall()
            return (int(counted[0]) if counted else 0), rows

        result: tuple[int, list[Row]] = self._read(work)
        return result

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """Point reads by the ``(level, target)`` unique index, in one statement."""
        if not keys:
            return []
        levels = [level for level, _ in keys]
        targets = [target for _, target in keys]
        rows = self._all(self.dialect.find_revocations, (levels, targets))
        return [revocation_from_row(row) for row in rows]

    def audit_head(self) -> tuple[int, str]:
        row = self._one(statements(self.tenant).read_head, ())
        if row is None:
            return 0, GENESIS_HASH
        return int(row[0]), str(row[1])

    # -- change notification -------------------------------------------------------------

    def start_watch(
        self, on_change: Callable[[float | None], None], *, interval: float = 1.0
    ) -> _Subscription:
        """Follow revocations other processes commit (the ``core.store`` watch capability).

        A background thread LISTENs on a dedicated connection and calls
        ``on_change(committed_at)`` with the committing process's wall-clock commit time
        for each notification from another store, ``on_change(None)`` for our own, after
        every (re)connect (to reload what was missed), and every ``interval`` seconds
        after a round trip on the LISTEN connection (a check-in: a refresh that follows
        it is current). While the database is unreachable it does not call at all and
        reconnects with a backoff of at most one second. ``close()`` the returned handle.

        The store and its tenant views share one such thread and connection (the first
        caller's ``interval``): each notification reaches every follower, and the last
        one to close stops it.
        """
        if self._closed:
            raise RuntimeError("store is closed")
        with self._watch_lock:
            subscribers = self._watch_subscribers
            if not self._watches:
                # One LISTEN connection per store, whatever the number of tenant views
                # that follow it: each notification is handed to every subscriber.
                self._watches.append(
                    RevocationWatch(
                        self._conninfo,
                        self._origin,
                        lambda committed_at: _fan_out(subscribers, committed_at),
                        interval,
                        connect_kwargs=self._connect_kwargs,
                        watchdog=self._watchdog,
                        deadline=self._limits.deadline,
                        on_schema=self._schema.note,
                    )
                )
            subscription = _Subscription(self, on_change)
            subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: _Subscription) -> None:
        with self._watch_lock:
            if subscription in self._watch_subscribers:
                self._watch_subscribers.remove(subscription)
            if self._watch_subscribers or not self._watches:
                return
            watches = list(self._watches)
            self._watches.clear()
        for watch in watches:
            watch.close()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every watch and close the pool. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        for watch in self._watches:
            watch.close()
        self._watches.clear()
        self._pool.close()
        self._ahead.close()
        self._watchdog.close()


class _Subscription:
    """One follower of a store's watch (``start_watch``); ``close()`` ends it alone."""

    def __init__(self, store: PostgresStore, on_change: Callable[[float | None], None]) -> None:
        self._store = store
        self.on_change = on_change

    def close(self) -> None:
        self._store._unsubscribe(self)


def _fan_out(subscribers: list[_Subscription], committed_at: float | None) -> None:
    """Call every subscriber; the first failure is raised after all were called (the
    watch then treats the round as failed, as it would for one follower)."""
    failure: BaseException | None = None
    for subscription in list(subscribers):
        try:
            subscription.on_change(committed_at)
        except Exception as exc:  # noqa: BLE001 - raised again below
            failure = failure or exc
    if failure is not None:
        raise failure


def _rollback_quietly(conn: psycopg.Connection[Row]) -> None:
    """Roll back if a transaction is open; the caller is already raising the real error."""
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
