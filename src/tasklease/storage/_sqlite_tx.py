"""The SQLite write transaction: savepoints, the revocation upsert, the audit head.

:class:`SQLiteWriteTx` is what :meth:`tasklease.storage.sqlite.SQLiteStore.write` hands
out inside ``BEGIN IMMEDIATE``; the store owns the writer connection, begins and commits.
Here is what runs in between and is SQLite's own, and how a full disk or a transaction
that SQLite abandoned half-way is reported.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tasklease.core.errors import InvalidRequest, Unavailable
from tasklease.core.store import (
    AuditEvent,
    RevocationRecord,
    RevocationWrite,
    check_revocation_target,
)
from tasklease.storage._sql import GENESIS_HASH, Dialect, SQLWriteTx, audit_rows

__all__ = [
    "DIALECT",
    "DISK_FULL",
    "DISK_FULL_RETRY",
    "SQLiteWriteTx",
    "disk_full",
    "read_audit_head",
]

DISK_FULL = "the disk holding the database is full"
# A full disk is not fixed in a second: callers are asked to wait longer than for a lock.
DISK_FULL_RETRY = 5


def disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL


def _unit_error(exc: BaseException) -> BaseException:
    """What a failed block in a savepoint raises: the driver's refusal of one value as
    InvalidRequest (as on PostgreSQL), a full disk as Unavailable, anything else as is."""
    if isinstance(exc, sqlite3.DataError) or (
        isinstance(exc, OverflowError) and "SQLite" in str(exc)
    ):
        return InvalidRequest(
            "a value in the request cannot be stored", reason=f"{type(exc).__name__}: {exc}"
        )
    if disk_full(exc):
        return Unavailable(DISK_FULL, reason=str(exc), retry_after=DISK_FULL_RETRY)
    return exc


def _dump_scopes(scopes: Sequence[str]) -> str:
    return json.dumps(list(scopes), separators=(",", ":"))


def _load_scopes(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


# Scope lists are JSON arrays in TEXT columns and booleans INTEGER 0/1 (the partial
# index on agent_sessions is written ``heartbeat_required = 1``). No row locks: a write
# transaction holds the database's write lock from its first statement.
DIALECT = Dialect(
    name="SQLite",
    folder="sqlite",
    placeholder="?",
    is_set="{} = 1",
    for_update="",
    contains="instr({}, ?) > 0",
    lineage_ids="json_each({}) AS j",
    load_scopes=_load_scopes,
    dump_scopes=_dump_scopes,
)


def read_audit_head(conn: sqlite3.Connection, dialect: Dialect) -> tuple[int, str]:
    """The last (seq, hash) of ``dialect``'s tenant's audit chain, or the genesis."""
    row = conn.execute(dialect.audit_head).fetchone()
    if row is None:
        return 0, GENESIS_HASH
    return int(row[0]), str(row[1])


class SQLiteWriteTx(SQLWriteTx[sqlite3.Connection]):
    """Writes inside one ``BEGIN IMMEDIATE`` transaction; valid only inside ``write()``."""

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect) -> None:
        super().__init__(conn, dialect)
        self._savepoints = 0
        # The audit head's seq as last read or written in this transaction (None: read
        # it). Only this transaction can append meanwhile: it holds the write lock.
        self._head_seq: int | None = None
        # Whether this transaction stored or extended a revocation (the store then wakes
        # the other processes on the file once it has committed).
        self.revoked = False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo this block's writes if it raises (and re-raise); the transaction goes on.

        A driver's refusal of a value is re-raised as ``InvalidRequest``. If the
        transaction itself is gone (SQLite rolled it back: disk full, I/O error), raise
        ``Unavailable`` and refuse every later statement and the commit.
        """
        conn = self._db()
        if not conn.in_transaction:  # a SAVEPOINT now would silently begin a new one
            raise self._lose(_transaction_lost("the transaction was rolled back by SQLite"))
        # Named by nesting depth: SQLite resolves a name to the innermost savepoint that
        # has it, and a fixed text keeps the three statements in sqlite3's statement cache
        # (a fresh name per savepoint was prepared anew every time, on the commit path).
        self._savepoints += 1
        name = f"sp_{self._savepoints}"  # an int we made: safe to put in SQL
        try:
            self._run(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException as exc:
                self._head_seq = None  # an append inside the block may be undone
                if not conn.in_transaction:
                    # SQLite aborted the whole transaction (disk full, I/O error): every
                    # write of the batch is gone, not only this block's.
                    raise self._lose(_transaction_lost(str(exc), full=disk_full(exc))) from exc
                self._run(f"ROLLBACK TO {name}")
                self._run(f"RELEASE {name}")
                translated = _unit_error(exc)
                if translated is exc:
                    raise
                raise translated from exc
            self._run(f"RELEASE {name}")
        finally:
            self._savepoints -= 1

    def _run(self, statement: str) -> None:
        """A savepoint statement; if it fails the transaction cannot be trusted any more."""
        try:
            self._db().execute(statement)
        except sqlite3.Error as exc:
            lost = _transaction_lost(f"{statement}: {exc}", full=disk_full(exc))
            raise self._lose(lost) from exc

    # -- revocations ---------------------------------------------------------------------

    def insert_revocation(self, record: RevocationRecord) -> RevocationWrite:
        """Store a revocation with a fresh ``seq``; ``record.seq`` is ignored.

        A present (level, target) whose ``revoked_at`` or ``expires_at`` is earlier takes
        the later of each and a new ``seq`` greater than every seq the tenant handed out
        before, so pollers of ``revocations_since`` see the change (``WIDENED``).
        """
        check_revocation_target(record)
        conn = self._db()
        d = self.dialect
        values = (record.level, record.target, record.revoked_at, record.expires_at)
        # The common case (a new entry) in one insert; a present one is read and merged.
        if self._inserted(d.insert_new_revocation, values):
            return RevocationWrite.INSERTED
        row = conn.execute(d.lock_revocation, (record.level, record.target)).fetchone()
        if row is None:  # pragma: no cover - the write lock is held: it cannot vanish
            self._inserted(d.insert_revocation, values)
            return RevocationWrite.INSERTED
        seq, old_revoked_at, old_expires_at = int(row[0]), int(row[1]), float(row[2])
        revoked_at = max(old_revoked_at, record.revoked_at)
        expires_at = max(old_expires_at, record.expires_at)
        if (revoked_at, expires_at) == (old_revoked_at, old_expires_at):
            return RevocationWrite.UNCHANGED
        # Deleted and inserted again: the insert takes the tenant's next seq, which its
        # trigger (revocations_numbered) records as the tenant's last.
        conn.execute(d.delete_revocation, (seq,))
        self._inserted(d.insert_revocation, (*values[:2], revoked_at, expires_at))
        return RevocationWrite.WIDENED

    def _inserted(self, statement: str, values: tuple[object, ...]) -> bool:
        """Run an insert of a revocation under the tenant's next seq (its trigger records
        that seq as the tenant's last); whether a row was inserted."""
        conn = self._db()
        if conn.execute(statement, values).rowcount != 1:
            return False
        self.revoked = True
        return True

    # -- audit ---------------------------------------------------------------------------

    def audit_head(self) -> tuple[int, str]:
        """The true head: this transaction holds the write lock, so no one appends meanwhile."""
        head = read_audit_head(self._db(), self.dialect)
        self._head_seq = head[0]
        return head

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events; each ``seq`` must be greater than the head's, else ``Conflict``."""
        conn = self._db()
        head_seq = (
            self._head_seq if self._head_seq is not None else read_audit_head(conn, self.dialect)[0]
        )
        rows = audit_rows(events, head_seq)
        self._head_seq = None  # unknown until the insert has gone through whole
        conn.executemany(self.dialect.insert_audit, rows)
        if events:
            self._index_audit(events[0].seq, events[-1].seq)
        self._head_seq = events[-1].seq if events else head_seq


def _transaction_lost(reason: str, *, full: bool = False) -> Unavailable:
    if full:
        return Unavailable(DISK_FULL, reason=reason, retry_after=DISK_FULL_RETRY)
    return Unavailable("storage lost the transaction", reason=reason, retry_after=1)
