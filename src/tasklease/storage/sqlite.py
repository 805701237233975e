"""The embedded store: stdlib ``sqlite3`` on one file in WAL mode.

Concurrency model:

* Writes go through one writer connection per process, guarded by a
  :class:`threading.Lock`. Every transaction starts with ``BEGIN IMMEDIATE``, which takes
  SQLite's write lock up front: writers in other processes on the same file (the broker
  may run several workers) queue on ``busy_timeout`` instead of failing half-way, and a
  read inside a write (``audit_head()``) sees the true head because no one else can write
  until we commit. Commits are therefore serialized, so the store-assigned revocation
  ``seq`` becomes visible in increasing order.
* Reads use one connection per thread (``threading.local``). In WAL mode they never block
  the writer and never see uncommitted data.

Durability: ``synchronous=FULL`` fsyncs the WAL on every commit, so a transaction that
returned is on disk. The core batches many operations into one ``write()`` (group
commit), so that costs one fsync per batch rather than per operation.

A full disk: SQLite fails the COMMIT (the WAL cannot grow) and rolls the transaction
back; nothing of it is kept and the file stays intact. ``write()`` then raises
:class:`Unavailable` saying the disk is full, reads go on, and the next commit after
space is freed succeeds: there is nothing to reset. If SQLite abandons a transaction
half-way (a full disk or an I/O error in a statement), the open transaction refuses every
later statement and its commit, so nothing runs outside the transaction its caller
believes in (SQLite would otherwise start a new one at the next ``SAVEPOINT``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from urllib.parse import quote

from tasklease.core.errors import Unavailable
from tasklease.core.store import RevocationRecord
from tasklease.localfiles import make_private_directories
from tasklease.storage._sql import (
    Migration,
    Row,
    SchemaError,
    SharedState,
    SQLStore,
    migration_failed,
    newer_error,
    revocation_from_row,
)
from tasklease.storage._sqlite_tx import (
    DIALECT,
    DISK_FULL,
    DISK_FULL_RETRY,
    SQLiteWriteTx,
    disk_full,
    read_audit_head,
)
from tasklease.storage._wake import Wakes, WakeSocket
from tasklease.storage._write_turns import WriteTurns

__all__ = ["SQLiteStore", "SchemaError"]

# STRICT tables (3.37) set the floor; upserts (3.24) and WAL come well before.
_MIN_SQLITE = (3, 37, 0)

# Free space below which the store does not call itself writable (check_writable): a
# batch of registrations appends a few hundred KiB to the WAL before its commit.
_MIN_FREE = 1 << 20


# -- migrations --------------------------------------------------------------------------


def _statements(script: str) -> Iterator[str]:
    """Split a migration into single statements.

    ``executescript`` would COMMIT the surrounding transaction first, and a migration
    must run inside one, so statements are cut with SQLite's own tokenizer.
    """
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise SchemaError("migration ends with an incomplete SQL statement")


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(version)


def _not_there(path: Path) -> str:
    """Why there is no database file at ``path``, in one line."""
    if path.exists():
        return f"database {path} is not a file"
    above = next((parent for parent in path.parents if parent.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot open database {path}: {above} is not a directory"
    return f"database {path} does not exist: only `tasklease init` creates a broker's database"


# -- the store ---------------------------------------------------------------------------


# The database (its shared state) whose write() the current context is inside.
_INSIDE_WRITE: ContextVar[object | None] = ContextVar("tasklease_sqlite_write", default=None)


class _ReaderSlot:
    """One thread's reader connection, closed when the thread's locals go or at close()."""

    __slots__ = ("__weakref__", "close", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # A thread that ends drops its threading.local and with it this slot; the
        # finalizer then closes the connection, so short-lived threads do not leak them.
        self.close = weakref.finalize(self, conn.close)


class SQLiteStore(SQLStore):
    """:class:`tasklease.core.store.Store` on one SQLite file.

    ``SQLiteStore(path)`` creates the file (mode 0600) and its parent directory (0700) if
    missing and applies pending migrations. With ``create=False`` it creates nothing: a
    missing file, or one without a tasklease schema, is refused (``SchemaError``; only
    ``tasklease init`` makes a broker's database). With ``migrate=False`` it refuses a
    database that is not at the current schema version (``SchemaError``: run
    ``tasklease db migrate``). A database newer than this code is always refused.

    ``busy_timeout`` is how long, in seconds, a transaction waits for another process's
    write lock before failing with ``Unavailable``; it waits as long again at most for
    this process's other writers, so a write fails within a bound however many of them
    queue behind a lock held elsewhere.
    """

    dialect = DIALECT
    local_reads = True  # see Store.local_reads
    statements_on_loop = True  # see Store.statements_on_loop

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        migrate: bool = True,
        busy_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise SchemaError(
                f"SQLite {sqlite3.sqlite_version} is too old: tasklease needs 3.37 or later"
            )
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise ValueError("SQLiteStore needs a filesystem path (use MemoryStore for memory)")
        # Absolute, so that per-thread readers open the same file if the cwd changes.
        self.path = Path(raw).absolute()
        if not create and not self.path.is_file():
            raise SchemaError(_not_there(self.path))
        self._busy_timeout = busy_timeout
        self._shared = SharedState()
        self._closed = False
        # Free bytes when a commit last failed for want of space (None once one commits).
        self._full_at: int | None = None
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._turns = WriteTurns(self.path, busy_timeout)
        # The other processes on this file, woken when a revocation commits (storage._wake).
        self._wakes = Wakes(self.path)
        self._local = threading.local()
        self._readers: weakref.WeakSet[_ReaderSlot] = weakref.WeakSet()
        self._readers_lock = threading.Lock()

        make_private_directories(self.path.parent)
        # Create the file ourselves so it is 0600 from the first byte; SQLite gives the
        # -wal and -shm files the same mode as the database file.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

        self._writer = self._connect(reader=False)
        # The files the writer has open, by (device, inode): a commit into a file that no
        # longer has its name is lost at the next start (``_same_files``).
        self._files = (os.fspath(self.path), os.fspath(self.path) + "-wal")  # db, its WAL
        self._identity = _identity(self._files[0])
        self._wal_identity: tuple[int, int] | None = None  # known after the first commit
        try:
            self._prepare_writer()
            if not create and _schema_version(self._writer) == 0:
                raise SchemaError(
                    f"database {self.path} holds no tasklease schema: only `tasklease init` "
                    "creates a broker's database"
                )
            if migrate:
                self.migrate()
            else:
                self._check_schema()
        except BaseException:
            self._writer.close()
            raise

    # -- connections ---------------------------------------------------------------------

    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{quote(str(self.path))}?mode=rw",  # never create: the file must exist
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # writer: shared under a lock; readers: closed by close()
        )
        try:
            self._configure(conn, reader=reader)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection, *, reader: bool) -> None:
        # Wait for another process's lock this long instead of failing with SQLITE_BUSY.
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        # FULL: fsync the WAL at every commit, so a write() that returned survives power
        # loss (NORMAL may lose the last commits). Only the writer commits, but set it on
        # every connection so a checkpoint run by any of them is equally careful.
        conn.execute("PRAGMA synchronous = FULL")
        # Do not run SQL functions or virtual tables named in the schema itself: a
        # tampered database file must not be able to run code through us.
        conn.execute("PRAGMA trusted_schema = OFF")
        if reader:
            # Readers must never write, even by mistake.
            conn.execute("PRAGMA query_only = ON")

    def _prepare_writer(self) -> None:
        # WAL: readers and the writer do not block each other, and a commit is one
        # sequential append (+ fsync) instead of rewriting pages in place. The mode is
        # stored in the file, so every process that opens it gets WAL too.
        mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SchemaError(f"could not put {self.path} in WAL mode (got {mode!r})")
        # Bound the WAL file's size on disk after each checkpoint (64 MiB).
        self._writer.execute("PRAGMA journal_size_limit = 67108864")
        # Up to 64 MiB of page cache for the writer (default 2 MiB): the audit table's
        # five secondary indexes keep one hot leaf per distinct agent/task; evicting them
        # costs re-reads on every batch. Measured +20-50% append rate at 1M events.
        self._writer.execute("PRAGMA cache_size = -65536")

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("store is closed")
        slot: _ReaderSlot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = _ReaderSlot(self._connect(reader=True))
            self._local.slot = slot
            with self._readers_lock:
                self._readers.add(slot)
        return slot.conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several statements see one snapshot."""
        with _read_errors:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _one(self, sql: str, params: Row) -> Row | None:
        with _read_errors:
            row: Row | None = self._reader().execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: Row = ()) -> list[Row]:
        with _read_errors:
            return self._reader().execute(sql, params).fetchall()

    def _count_and_page(
        self, count_sql: str, count_params: list[object], page_sql: str, page_params: list[object]
    ) -> tuple[int, list[Row]]:
        with self._reading() as conn:  # count and page from one snapshot
            total = int(conn.execute(count_sql, count_params).fetchone()[0])
            rows = conn.execute(page_sql, page_params).fetchall()
        return total, rows

    # -- schema --------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""
        with self._write_lock:
            return _schema_version(self._writer)

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied.

        Safe to run from several processes at once: the version is re-read under the
        write lock, so each migration is applied exactly once. Raise ``SchemaError`` if the
        database is newer than this code or a migration fails.
        """
        migrations = DIALECT.migrations()
        known = len(migrations)
        applied: list[int] = []
        with self._write_lock:
            for migration in migrations:
                if self._apply(migration, known):
                    applied.append(migration.version)
        return applied

    def _apply(self, migration: Migration, known: int) -> bool:
        """Apply one migration in its own transaction unless already applied."""
        conn = self._writer
        self._begin(conn)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at REAL NOT NULL) STRICT"
            )
            current = _schema_version(conn)
            if current > known:
                raise newer_error(current, known)
            needed = current < migration.version
            if needed:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    DIALECT.record_migration, (migration.version, migration.name, time.time())
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            raise migration_failed(migration, exc) from exc
        except BaseException:
            _rollback_quietly(conn)
            raise
        return needed

    # -- writes --------------------------------------------------------------------------

    def _begin(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Unavailable(
                "storage is busy", reason=f"BEGIN IMMEDIATE failed: {exc}", retry_after=1
            ) from exc

    @contextmanager
    def write(self) -> Iterator[SQLiteWriteTx]:
        """One transaction: commit on a clean exit, roll back everything on an exception.

        Raise ``Unavailable`` if the write lock cannot be had within ``busy_timeout`` or
        the commit fails (nothing was written). Not reentrant: calling ``write()`` inside
        ``write()`` raises ``RuntimeError`` (use the open transaction), on the thread that
        opened it or on an event loop running its statements (``core.handoff`` carries
        the transaction's context there).
        """
        shared = self._shared
        if self._write_owner == threading.get_ident() or _INSIDE_WRITE.get() is shared:
            raise RuntimeError("write() is not reentrant: use the open transaction")
        revoked = False
        # This process's other writers wait their busy_timeout for SQLite's lock one at a
        # time: without a bound here, the last of them would wait for all of theirs.
        if not self._write_lock.acquire(timeout=self._busy_timeout):
            raise Unavailable(
                "storage is busy",
                reason="another write of this process held the store for busy_timeout",
                retry_after=1,
            )
        try:
            with self._turns._writer_turn():
                if self._closed:
                    raise RuntimeError("store is closed")
                self._write_owner = threading.get_ident()
                inside = _INSIDE_WRITE.set(shared)
                try:
                    conn = self._writer
                    self._begin(conn)
                    try:
                        self._same_files()
                    except BaseException:
                        _rollback_quietly(conn)
                        raise
                    changes = conn.total_changes
                    tx = SQLiteWriteTx(conn, self.dialect)
                    try:
                        yield tx
                    except BaseException:
                        tx._end()
                        _rollback_quietly(conn)
                        raise
                    tx._end()
                    if tx.lost is not None:  # never commit what is left of a lost transaction
                        _rollback_quietly(conn)
                        if tx.lost.detail == DISK_FULL:
                            self._full_at = self._free_bytes()
                        raise tx.lost
                    try:
                        conn.execute("COMMIT")
                    except sqlite3.Error as exc:
                        _rollback_quietly(conn)
                        if disk_full(exc):
                            self._full_at = self._free_bytes()
                            raise Unavailable(
                                DISK_FULL,
                                reason=f"COMMIT failed: {exc}",
                                retry_after=DISK_FULL_RETRY,
                            ) from exc
                        raise Unavailable(
                            "storage could not commit",
                            reason=f"COMMIT failed: {exc}",
                            retry_after=1,
                        ) from exc
                    if conn.total_changes != changes:  # it wrote, so there was room again
                        self._full_at = None
                    if self._wal_identity is None:  # committed: the WAL exists now
                        self._wal_identity = _identity(self._files[1])
                    revoked = tx.revoked
                finally:
                    _INSIDE_WRITE.reset(inside)
                    self._write_owner = None
        finally:
            self._write_lock.release()
        if revoked:
            # Committed (durable): the other processes may look now; outside the turn.
            self._wakes.wake_peers()

    def _same_files(self) -> None:
        """Raise ``Unavailable`` unless the database and its WAL still have their names.

        A file replaced or removed under a running broker (a backup moved over it, the WAL
        deleted) keeps the writer's descriptor: SQLite goes on committing into a file no
        one will open again, so every acknowledged write would be lost at the next start.
        Checked in the write transaction, before any statement; writes go on by
        themselves if the file the writer opened is put back under its name.
        """
        database, wal = self._files
        for path, opened in ((database, self._identity), (wal, self._wal_identity)):
            if opened is not None and _identity(path) != opened:
                raise Unavailable(
                    "the database file was replaced or removed while the broker ran",
                    reason=f"{path} is not the file this process opened: restart the broker",
                    retry_after=5,
                )

    def open_revocation_wake(self) -> WakeSocket | None:
        """A socket that becomes readable when another process commits a revocation.

        For a serving process to poll ``revocations_since`` at once instead of at its next
        interval (``http.following``); None when the wake-up directory cannot be used
        (logged once): the poll alone then carries revocations between processes.
        """
        return self._wakes.bind()

    def _free_bytes(self) -> int:
        """Bytes this process may still write on the database's filesystem."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return 0
        # root may write into the blocks reserved for it; others only up to f_bavail.
        blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
        return blocks * stats.f_frsize

    def check_writable(self) -> None:
        """Raise ``Unavailable`` unless a write could commit now (for readiness).

        The disk must have room (at least 1 MiB free, and 1 MiB more than when a commit
        last failed for want of it, until a commit succeeds), and the write lock must be
        obtainable (an empty transaction: it writes nothing, so it costs no space). May
        wait up to ``busy_timeout`` for the lock: call it where a wait is bounded.
        """
        free = self._free_bytes()
        full_at = self._full_at
        if free < _MIN_FREE or (full_at is not None and free < full_at + _MIN_FREE):
            raise Unavailable(
                DISK_FULL,
                reason=f"{free} bytes free beside {self.path}",
                retry_after=DISK_FULL_RETRY,
            )
        with self.write():
            pass

    # -- reads ---------------------------------------------------------------------------

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """Point reads by the ``UNIQUE (tenant_id, level, target)`` index; never a scan."""
        found: dict[int, RevocationRecord] = {}
        with self._reading() as conn:
            for key in keys:
                row = conn.execute(self.dialect.find_revocation, key).fetchone()
                if row is not None:
                    record = revocation_from_row(row)
                    found[record.seq] = record
        return [found[seq] for seq in sorted(found)]

    def audit_head(self) -> tuple[int, str]:
        with _read_errors:
            return read_audit_head(self._reader(), self.dialect)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Wait for a running write, then close every connection. Closing twice is harmless."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._wakes.close()
            # Refresh the planner's statistics where it would help; cheap when not needed.
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA optimize")
            self._writer.close()
        with self._readers_lock:
            readers = list(self._readers)
            self._readers.clear()
        for slot in readers:
            slot.close()


class _ReadErrors:
    """A read SQLite could not make (its file unreadable, replaced, corrupt; locked past
    busy_timeout) is ``Unavailable``, as on PostgreSQL: a 503, never a driver's error.
    Misuse (``ProgrammingError``, ``InterfaceError``) stays what it is: a bug.

    A class rather than a generator's context manager: every read of the store enters
    it, and this costs a sixth as much."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, sqlite3.Error) and not isinstance(
            exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)
        ):
            raise Unavailable(
                "storage could not be read", reason=f"{type(exc).__name__}: {exc}", retry_after=1
            ) from exc


_read_errors = _ReadErrors()


def _identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the file at ``path``, None when there is none."""
    try:
        stats = os.stat(path)
    except OSError:
        return None
    return stats.st_dev, stats.st_ino


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; the caller is already raising the real error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
