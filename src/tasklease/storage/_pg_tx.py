"""The PostgreSQL write transaction: savepoints, the revocation upsert, the audit head.

:class:`PostgresWriteTx` is what :meth:`tasklease.storage.postgres.PostgresStore.write`
hands out; the store owns the connection, begins and commits. Here is what runs in
between and is PostgreSQL's own: every unit of a batch in a savepoint of its own, the
head row lock that makes replicas take turns on the audit chain and on revocation
``seq`` values, and how a refused value or a timeout inside a unit is reported.

Each statement is a round trip to the server, and a batch's committer holds the head row
lock across them (docs/decisions.md 111), so the transaction spends none it can avoid: a
unit's savepoint is released together with the next unit's SAVEPOINT.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors

from tasklease.core.errors import Conflict, InvalidRequest, Unavailable
from tasklease.core.store import (
    AuditEvent,
    RevocationRecord,
    RevocationWrite,
    check_revocation_target,
)
from tasklease.storage._sql import (
    GENESIS_HASH,
    Dialect,
    Row,
    SchemaError,
    SQLWriteTx,
    audit_rows,
    check_tenant_id,
    revocation_from_row,
)

__all__ = ["DIALECT", "PostgresWriteTx", "statements", "unit_error"]

# Scope lists are text[] (psycopg passes a list and returns one) and booleans are
# boolean (the partial index on agent_sessions is written ``WHERE heartbeat_required``).
DIALECT = Dialect(
    name="PostgreSQL",
    folder="postgres",
    placeholder="%s",
    is_set="{}",
    for_update=" FOR UPDATE",
    contains="strpos({}, ?) > 0",
    lineage_ids="unnest({}) AS j(value)",
    load_scopes=tuple,
    dump_scopes=list,
)


# -- statements --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Statements:
    """PostgreSQL's own statements for one tenant (its audit head row, revocation upsert).

    Built like the Dialect's: constant text and the tenant id, checked by the Dialect.
    """

    lock_head: str
    create_head: str
    update_head: str
    read_head: str
    upsert_revocation: str


@functools.cache
def statements(tenant: str) -> _Statements:
    """The statements of :class:`_Statements` for ``tenant`` (a checked tenant id)."""
    t = f"tenant_id = '{check_tenant_id(tenant)}'"
    return _Statements(
        lock_head=f"SELECT seq, hash FROM audit_head WHERE {t} FOR UPDATE",
        # A tenant's head row is made by its first append or revocation.
        create_head=(
            "INSERT INTO audit_head (tenant_id, seq, hash)"
            f" VALUES ('{tenant}', 0, '{GENESIS_HASH}') ON CONFLICT DO NOTHING"
        ),
        update_head=f"UPDATE audit_head SET seq = %s, hash = %s WHERE {t}",
        read_head=f"SELECT seq, hash FROM audit_head WHERE {t}",
        # The entry takes the tenant's next seq (migration 0020), in the same statement
        # that records it as the tenant's last. An extension takes one too, so readers of
        # revocations_since see the change; the WHERE makes an entry that would not
        # widen a no-op (no row returned, no seq used).
        upsert_revocation=(
            "WITH stored AS (INSERT INTO revocations"
            " (tenant_id, seq, level, target, revoked_at, expires_at)"
            f" VALUES ('{tenant}',"
            f" (SELECT COALESCE(MAX(seq), 0) + 1 FROM revocation_seqs WHERE {t}),"
            " %s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, level, target) DO UPDATE SET"
            " seq = EXCLUDED.seq,"
            " revoked_at = GREATEST(revocations.revoked_at, EXCLUDED.revoked_at),"
            " expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)"
            " WHERE revocations.revoked_at < EXCLUDED.revoked_at"
            " OR revocations.expires_at < EXCLUDED.expires_at"
            " RETURNING seq, (xmax = 0) AS inserted),"
            " counted AS (INSERT INTO revocation_seqs (tenant_id, seq)"
            f" SELECT '{tenant}', seq FROM stored"
            " ON CONFLICT (tenant_id) DO UPDATE SET seq = EXCLUDED.seq)"
            " SELECT seq, inserted FROM stored"
        ),
    )


_APP_CONSTRAINTS = {
    "apps_pkey": "app id already exists",
    "apps_name_key": "app name already exists",
    "apps_client_id_key": "app client_id already exists",
}


def unit_error(exc: BaseException) -> BaseException:
    """What a block that failed inside a savepoint raises, once rolled back to it: a value
    the driver or the server refused as ``InvalidRequest`` (as on SQLite), a statement or
    lock timeout as ``Unavailable``, a server that takes no writes (SQLSTATE 25006: a
    standby, or ``default_transaction_read_only``) as ``Unavailable`` that says so,
    anything else as it is."""
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return Unavailable(
            "the database is read-only",
            reason=(
                "the database is read-only (SQLSTATE 25006: a standby, or "
                f"default_transaction_read_only = on): {type(exc).__name__}: {exc}"
            ),
            retry_after=1,
        )
    if isinstance(exc, psycopg.DataError):
        return InvalidRequest(
            "a value in the request cannot be stored", reason=f"{type(exc).__name__}: {exc}"
        )
    if isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
        return Unavailable(
            "the database did not finish in time",
            reason=f"{type(exc).__name__}: {exc}",
            retry_after=1,
        )
    return exc


class PostgresWriteTx(SQLWriteTx[psycopg.Connection[Row]]):
    """Writes inside one transaction; valid only inside :meth:`PostgresStore.write`.

    ``lost_as`` turns the driver's error on a statement of the transaction's own (a
    savepoint, its rollback) into the ``Unavailable`` that then fails the transaction.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Row],
        dialect: Dialect,
        lost_as: Callable[[psycopg.Error], Unavailable],
    ) -> None:
        super().__init__(conn, dialect)
        self._statements = statements(dialect.tenant)
        self._lost_as = lost_as
        self._depth = 0  # savepoints open
        self._savepoints = 0  # savepoint names handed out
        # The savepoint depth at which the head row lock was taken, or None. A lock taken
        # inside a savepoint that rolls back is released with it.
        self._head_locked_at: int | None = None
        # The head's seq as this transaction last read or wrote it under the lock, or None
        # (unknown: re-read). Any rollback forgets it.
        self._head_seq: int | None = None
        self.notify_seq = 0  # highest revocation seq written (0: none), for pg_notify
        # The last top-level savepoint, done but not yet released: its RELEASE goes out
        # with the next one's SAVEPOINT, one round trip for both (see savepoint()).
        self._unreleased: str | None = None

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo this block's writes if it raises (and re-raise); the transaction goes on.

        Whatever the block raised (a failed statement aborts a PostgreSQL transaction
        until it is rolled back to a savepoint) fails the block only; a value the server
        or the driver refused is re-raised as ``InvalidRequest``. If the rollback itself
        fails (the connection is gone), raise ``Unavailable`` and refuse every later
        statement and the commit.
        """
        self._savepoints += 1
        name = f"sp_{self._savepoints}"  # an int we made: safe to put in SQL
        previous, self._unreleased = self._unreleased, None
        if previous is not None and self._depth == 0:
            # Both statements in one simple query: one round trip between two units.
            self._run(f"RELEASE SAVEPOINT {previous}; SAVEPOINT {name}")
        else:
            self._unreleased = previous
            self._run(f"SAVEPOINT {name}")
        self._depth += 1
        depth = self._depth
        try:
            yield
        except BaseException as exc:
            self._depth = depth - 1
            if self._head_locked_at is not None and self._head_locked_at >= depth:
                self._head_locked_at = None
            self._head_seq = None
            self._run(f"ROLLBACK TO SAVEPOINT {name}")
            self._run(f"RELEASE SAVEPOINT {name}")
            translated = unit_error(exc)
            if translated is exc:
                raise
            raise translated from exc
        self._depth = depth - 1
        if self._head_locked_at is not None and self._head_locked_at >= depth:
            self._head_locked_at = depth - 1
        if self._depth == 0:
            # A unit of the batch is done. Its savepoint is released with the next unit's
            # SAVEPOINT; statements that run before that run inside it, which changes
            # nothing: no one rolls back to it any more, and COMMIT (or the batch's
            # ROLLBACK) ends it with the transaction.
            self._unreleased = name
        else:
            self._run(f"RELEASE SAVEPOINT {name}")

    def _run(self, statement: str) -> None:
        """A statement of the transaction's own; if it fails, the transaction is lost."""
        try:
            self._db().execute(statement)
        except psycopg.Error as exc:
            raise self._lose(self._lost_as(exc)) from exc

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Run one statement in its own savepoint so its failure leaves the tx usable."""
        self._run("SAVEPOINT sp_stmt")
        try:
            yield
        except BaseException:
            self._run("ROLLBACK TO SAVEPOINT sp_stmt")
            self._run("RELEASE SAVEPOINT sp_stmt")
            raise
        self._run("RELEASE SAVEPOINT sp_stmt")

    def _update_app_row(self, params: Row) -> None:
        try:
            with self._guard():
                self._db().execute(self.dialect.update_app, params)
        except pg_errors.UniqueViolation as exc:
            name = exc.diag.constraint_name or ""
            raise Conflict(_APP_CONSTRAINTS.get(name, "app already exists")) from None

    # -- revocations ---------------------------------------------------------------------

    def insert_revocation(self, record: RevocationRecord) -> RevocationWrite:
        """Store a revocation with a fresh ``seq``; ``record.seq`` is ignored.

        A present (level, target) whose ``revoked_at`` or ``expires_at`` is earlier is
        widened (each takes its maximum) under a new, larger ``seq`` (``WIDENED``).
        The head lock is taken first, so seqs commit in increasing order across replicas;
        a transaction that holds it already (a group commit takes it before its first
        unit) does not ask again.
        """
        check_revocation_target(record)
        if self._head_locked_at is None:
            self._lock_head()
        row = (
            self._db()
            .execute(
                self._statements.upsert_revocation,
                (record.level, record.target, record.revoked_at, record.expires_at),
            )
            .fetchone()
        )
        if row is None:
            return RevocationWrite.UNCHANGED
        self.notify_seq = max(self.notify_seq, int(row[0]))
        return RevocationWrite.INSERTED if row[1] else RevocationWrite.WIDENED

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """Point reads by the ``(level, target)`` unique index, in one statement: what an
        issuance reads of the entries that would end it (``Kernel.revoked_in``) is one
        round trip however many keys it has."""
        if not keys:
            return []
        levels = [level for level, _ in keys]
        targets = [target for _, target in keys]
        rows = self._db().execute(self.dialect.find_revocations, (levels, targets)).fetchall()
        return [revocation_from_row(row) for row in rows]

    # -- audit ---------------------------------------------------------------------------

    def _lock_head(self) -> tuple[int, str]:
        conn = self._db()
        row = conn.execute(self._statements.lock_head).fetchone()
        if row is None:
            conn.execute(self._statements.create_head)
            row = conn.execute(self._statements.lock_head).fetchone()
        if row is None:
            raise SchemaError("the audit_head row is missing: the schema is damaged")
        if self._head_locked_at is None:
            self._head_locked_at = self._depth
        self._head_seq = int(row[0])
        return int(row[0]), str(row[1])

    def audit_head(self) -> tuple[int, str]:
        """(last seq, last hash), read under the head row lock, which this transaction then
        holds until it ends: no other replica can append meanwhile."""
        return self._lock_head()

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events; each ``seq`` must be greater than the head's, else ``Conflict``."""
        if not events:
            return
        # The head as read under the lock this transaction holds (no one else can move it),
        # else read and locked now.
        head_seq = self._head_seq
        if self._head_locked_at is None or head_seq is None:
            head_seq, _ = self._lock_head()
        rows = audit_rows(events, head_seq)
        self._head_seq = None  # unknown until the head row is updated
        conn = self._db()
        with conn.cursor() as cursor:
            cursor.executemany(self.dialect.insert_audit, rows)
        conn.execute(self._statements.update_head, (events[-1].seq, events[-1].hash))
        self._head_seq = events[-1].seq
        self._index_audit(events[0].seq, events[-1].seq)
