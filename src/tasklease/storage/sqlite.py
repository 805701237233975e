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
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.resources
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tasklease.core.errors import Conflict, InternalError, NotFound, Unavailable
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AuditEvent,
    AuditQuery,
    DiscoveryBinding,
    LaunchTokenRecord,
    ReferenceTokenRecord,
    RevocationRecord,
)

__all__ = ["SQLiteStore", "SchemaError"]

# STRICT tables (3.37) set the floor; upserts (3.24) and WAL come well before.
_MIN_SQLITE = (3, 37, 0)
_GENESIS_HASH = "0" * 64
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# A fetched row: sqlite3 types rows as Any; the mappers below convert each column.
_Row = tuple[Any, ...]


class SchemaError(InternalError):
    """The database's schema is not the one this tasklease can use.

    Raised when opening a database that is older than the code and ``migrate=False``,
    newer than the code (upgrade tasklease), when a migration fails, or when the file
    cannot be used as this store needs (WAL mode, SQLite too old).
    """

    default_detail = "database schema mismatch"


# -- migrations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    name: str
    sql: str


@functools.cache
def _migrations() -> tuple[_Migration, ...]:
    """The numbered SQL files shipped in ``storage/migrations/sqlite``, in order."""
    folder = importlib.resources.files("tasklease.storage") / "migrations" / "sqlite"
    found: list[_Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None or not entry.is_file():
            continue
        found.append(_Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError("SQLite migrations must be numbered 0001, 0002, ... without gaps")
    return tuple(found)


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


def _newer_error(current: int, known: int) -> SchemaError:
    return SchemaError(
        f"database schema version {current} is newer than this tasklease (knows {known}): "
        "upgrade tasklease"
    )


# -- statements --------------------------------------------------------------------------
# Spelled out in full: what runs is what you read.

_SELECT_APP = (
    "SELECT app_id, name, client_id, secret_hash, scopes, token_ttl, status,"
    " created_at, updated_at, created_by FROM apps"
)
_SELECT_LAUNCH = (
    "SELECT token_hash, agent_name, allowed_scope, max_ttl, single_use, created_at,"
    " expires_at, created_by, app_id, consumed_at, audience, principal FROM launch_tokens"
)
_SELECT_SESSION = (
    "SELECT agent_id, principal, heartbeat_required, last_heartbeat, resumes, state,"
    " expires_at FROM agent_sessions"
)
_SELECT_BINDING = (
    "SELECT agent_id, endpoint, issued_at, signature, expires_at FROM discovery_bindings"
)
_SELECT_AGENT = (
    "SELECT agent_id, public_key, orch_id, task_id, scope, app_id, client_id,"
    " registered_at, status, cnf, audience FROM agents"
)
_SELECT_REVOCATION = "SELECT seq, level, target, revoked_at, expires_at FROM revocations"
_SELECT_REFERENCE = "SELECT token_hash, kind, claims, jti, expires_at FROM reference_tokens"
_SELECT_AUDIT = (
    "SELECT seq, timestamp, event_type, agent_id, task_id, orch_id, detail, resource,"
    " outcome, deleg_depth, deleg_chain_hash, request_id, prev_hash, hash FROM audit_events"
)


# -- row mapping -------------------------------------------------------------------------


def _dump_scopes(scopes: Sequence[str]) -> str:
    return json.dumps(list(scopes), separators=(",", ":"))


def _load_scopes(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _timestamp_seconds(timestamp: str) -> float:
    """Unix seconds of an RFC 3339 timestamp; it must carry an offset (``Z`` or ``±hh:mm``).

    The memory store has the same function: keep the two in step.
    """
    parsed = datetime.fromisoformat(timestamp)
    if parsed.tzinfo is None:
        raise ValueError(f"audit timestamp {timestamp!r} has no UTC offset")
    return parsed.timestamp()


def _app_from_row(row: _Row) -> AppRecord:
    app_id, name, client_id, secret_hash, scopes, token_ttl, status, created, updated, by = row
    return AppRecord(
        app_id=str(app_id),
        name=str(name),
        client_id=str(client_id),
        secret_hash=str(secret_hash),
        scopes=_load_scopes(str(scopes)),
        token_ttl=int(token_ttl),
        status=str(status),
        created_at=float(created),
        updated_at=float(updated),
        created_by=str(by),
    )


def _app_params(app: AppRecord) -> tuple[object, ...]:
    return (
        app.app_id,
        app.name,
        app.client_id,
        app.secret_hash,
        _dump_scopes(app.scopes),
        app.token_ttl,
        app.status,
        app.created_at,
        app.updated_at,
        app.created_by,
    )


def _launch_token_from_row(row: _Row) -> LaunchTokenRecord:
    (token_hash, agent_name, scope, max_ttl, single_use, created, expires, by, app_id, used,
     audience, principal) = row  # fmt: skip
    return LaunchTokenRecord(
        token_hash=str(token_hash),
        agent_name=str(agent_name),
        allowed_scope=_load_scopes(str(scope)),
        max_ttl=int(max_ttl),
        single_use=bool(single_use),
        created_at=float(created),
        expires_at=float(expires),
        created_by=str(by),
        app_id=str(app_id),
        consumed_at=None if used is None else float(used),
        audience=_load_scopes(str(audience)),
        principal=str(principal),
    )


def _session_from_row(row: _Row) -> AgentSession:
    agent_id, principal, required, last_heartbeat, resumes, state, expires_at = row
    return AgentSession(
        agent_id=str(agent_id),
        principal=str(principal),
        heartbeat_required=bool(required),
        last_heartbeat=float(last_heartbeat),
        resumes=int(resumes),
        state=str(state),
        expires_at=float(expires_at),
    )


def _binding_from_row(row: _Row) -> DiscoveryBinding:
    agent_id, endpoint, issued_at, signature, expires_at = row
    return DiscoveryBinding(
        agent_id=str(agent_id),
        endpoint=str(endpoint),
        issued_at=int(issued_at),
        signature=bytes(signature),
        expires_at=float(expires_at),
    )


def _agent_from_row(row: _Row) -> AgentRecord:
    (agent_id, public_key, orch_id, task_id, scope, app_id, client_id, registered, status, cnf,
     audience) = row  # fmt: skip
    return AgentRecord(
        agent_id=str(agent_id),
        public_key=bytes(public_key),
        orch_id=str(orch_id),
        task_id=str(task_id),
        scope=_load_scopes(str(scope)),
        app_id=str(app_id),
        client_id=str(client_id),
        registered_at=float(registered),
        status=str(status),
        cnf=str(cnf),
        audience=_load_scopes(str(audience)),
    )


def _reference_from_row(row: _Row) -> ReferenceTokenRecord:
    token_hash, kind, claims, jti, expires_at = row
    return ReferenceTokenRecord(
        token_hash=str(token_hash),
        kind=str(kind),
        claims=str(claims),
        jti=str(jti),
        expires_at=float(expires_at),
    )


def _revocation_from_row(row: _Row) -> RevocationRecord:
    seq, level, target, revoked_at, expires_at = row
    return RevocationRecord(
        level=str(level),
        target=str(target),
        revoked_at=int(revoked_at),
        expires_at=float(expires_at),
        seq=int(seq),
    )


def _audit_from_row(row: _Row) -> AuditEvent:
    # _SELECT_AUDIT lists the columns in AuditEvent's field order, and STRICT tables
    # guarantee their types, so no per-column conversion is needed on this hot path
    # (iter_audit walks the whole log).
    return AuditEvent(*row)


def _audit_head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return 0, _GENESIS_HASH
    return int(row[0]), str(row[1])


# -- the write transaction ---------------------------------------------------------------


class _SQLiteWriteTx:
    """Writes inside one ``BEGIN IMMEDIATE`` transaction; valid only inside ``write()``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._savepoints = 0
        self._open = True
        # The audit head's seq as last read or written in this transaction (None: read
        # it). Only this transaction can append meanwhile: it holds the write lock.
        self._head_seq: int | None = None

    def _db(self) -> sqlite3.Connection:
        if not self._open:
            raise RuntimeError("this write transaction has ended")
        return self._conn

    def _end(self) -> None:
        self._open = False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo this block's writes if it raises (and re-raise); the transaction goes on."""
        conn = self._db()
        # Named by nesting depth: SQLite resolves a name to the innermost savepoint that
        # has it, and a fixed text keeps the three statements in sqlite3's statement cache
        # (a fresh name per savepoint was prepared anew every time, on the commit path).
        self._savepoints += 1
        name = f"sp_{self._savepoints}"  # an int we made: safe to put in SQL
        try:
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                # If SQLite already aborted the whole transaction (disk full, I/O error)
                # the savepoint is gone; write() then fails the commit: fail-closed.
                self._head_seq = None  # an append inside the block may be undone
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
        finally:
            self._savepoints -= 1

    def _exists(self, sql: str, params: _Row) -> bool:
        return self._db().execute(sql, params).fetchone() is not None

    # -- apps ----------------------------------------------------------------------------

    def insert_app(self, app: AppRecord) -> None:
        """Store a new app; raise ``Conflict`` if its app_id, name or client_id is taken.

        The checks are plain reads: this transaction holds the database write lock, so
        nothing can slip in between the check and the insert.
        """
        if self._exists("SELECT 1 FROM apps WHERE app_id = ?", (app.app_id,)):
            raise Conflict("app id already exists")
        if self._exists("SELECT 1 FROM apps WHERE name = ?", (app.name,)):
            raise Conflict("app name already exists")
        if self._exists("SELECT 1 FROM apps WHERE client_id = ?", (app.client_id,)):
            raise Conflict("app client_id already exists")
        self._db().execute(
            "INSERT INTO apps (app_id, name, client_id, secret_hash, scopes, token_ttl,"
            " status, created_at, updated_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _app_params(app),
        )

    def update_app(self, app: AppRecord) -> None:
        """Replace the app with ``app.app_id``.

        Raise ``NotFound`` if there is none and ``Conflict`` if the new name or client_id
        belongs to another app.
        """
        if not self._exists("SELECT 1 FROM apps WHERE app_id = ?", (app.app_id,)):
            raise NotFound("app not found")
        if self._exists(
            "SELECT 1 FROM apps WHERE name = ? AND app_id <> ?", (app.name, app.app_id)
        ):
            raise Conflict("app name already exists")
        if self._exists(
            "SELECT 1 FROM apps WHERE client_id = ? AND app_id <> ?", (app.client_id, app.app_id)
        ):
            raise Conflict("app client_id already exists")
        self._db().execute(
            "UPDATE apps SET name = ?, client_id = ?, secret_hash = ?, scopes = ?,"
            " token_ttl = ?, status = ?, created_at = ?, updated_at = ?, created_by = ?"
            " WHERE app_id = ?",
            (*_app_params(app)[1:], app.app_id),
        )

    # -- launch tokens and nonces --------------------------------------------------------

    def insert_launch_token(self, record: LaunchTokenRecord) -> None:
        """Store a launch token; raise ``Conflict`` if its hash is already present."""
        if self._exists("SELECT 1 FROM launch_tokens WHERE token_hash = ?", (record.token_hash,)):
            raise Conflict("launch token already exists")
        self._db().execute(
            "INSERT INTO launch_tokens (token_hash, agent_name, allowed_scope, max_ttl,"
            " single_use, created_at, expires_at, created_by, app_id, consumed_at, audience,"
            " principal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.token_hash,
                record.agent_name,
                _dump_scopes(record.allowed_scope),
                record.max_ttl,
                int(record.single_use),
                record.created_at,
                record.expires_at,
                record.created_by,
                record.app_id,
                record.consumed_at,
                _dump_scopes(record.audience),
                record.principal,
            ),
        )

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        conn = self._db()
        # One conditional UPDATE: the check and the mark cannot be separated.
        consumed = conn.execute(
            "UPDATE launch_tokens SET consumed_at = ?"
            " WHERE token_hash = ? AND single_use = 1 AND consumed_at IS NULL AND expires_at > ?",
            (now, token_hash, now),
        )
        if consumed.rowcount == 1:
            return True
        reusable = conn.execute(
            "SELECT 1 FROM launch_tokens"
            " WHERE token_hash = ? AND single_use = 0 AND expires_at > ?",
            (token_hash, now),
        ).fetchone()
        return reusable is not None

    def consume_nonce(self, nonce_hash: str, expires_at: float) -> bool:
        cursor = self._db().execute(
            "INSERT INTO used_nonces (nonce_hash, expires_at) VALUES (?, ?)"
            " ON CONFLICT (nonce_hash) DO NOTHING",
            (nonce_hash, expires_at),
        )
        return cursor.rowcount == 1

    # -- agents --------------------------------------------------------------------------

    def insert_agent(self, agent: AgentRecord) -> None:
        """Store a new agent; raise ``Conflict`` if its agent_id is already present."""
        if self._exists("SELECT 1 FROM agents WHERE agent_id = ?", (agent.agent_id,)):
            raise Conflict("agent already exists")
        self._db().execute(
            "INSERT INTO agents (agent_id, public_key, orch_id, task_id, scope, app_id,"
            " client_id, registered_at, status, cnf, audience)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                agent.agent_id,
                agent.public_key,
                agent.orch_id,
                agent.task_id,
                _dump_scopes(agent.scope),
                agent.app_id,
                agent.client_id,
                agent.registered_at,
                agent.status,
                agent.cnf,
                _dump_scopes(agent.audience),
            ),
        )

    def set_agent_status(self, agent_id: str, status: str) -> None:
        """Set an agent's status; an unknown agent_id is not an error (nothing to mark).

        Revocation is idempotent and needs no existence check: the core revokes agent
        IDs this store may never have seen (another replica's, a federated domain's).
        """
        self._db().execute("UPDATE agents SET status = ? WHERE agent_id = ?", (status, agent_id))

    # -- by-reference tokens -------------------------------------------------------------

    # -- agent sessions, leases, discovery ------------------------------------

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        row = self._db().execute(_SELECT_SESSION + " WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else _session_from_row(row)

    def put_agent_session(self, session: AgentSession) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO agent_sessions (agent_id, principal, heartbeat_required,"
            " last_heartbeat, resumes, state, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                session.agent_id,
                session.principal,
                int(session.heartbeat_required),
                session.last_heartbeat,
                session.resumes,
                session.state,
                session.expires_at,
            ),
        )

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take the lease if free, expired or already ours: one upsert whose update only
        applies under that condition (this transaction holds the write lock)."""
        cursor = self._db().execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            " expires_at = excluded.expires_at"
            " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
            (name, holder, expires_at, now),
        )
        return cursor.rowcount == 1

    def put_discovery_binding(self, binding: DiscoveryBinding) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO discovery_bindings (agent_id, endpoint, issued_at,"
            " signature, expires_at) VALUES (?, ?, ?, ?, ?)",
            (
                binding.agent_id,
                binding.endpoint,
                binding.issued_at,
                binding.signature,
                binding.expires_at,
            ),
        )

    def insert_reference_token(self, record: ReferenceTokenRecord) -> None:
        """Store a by-reference token; raise ``Conflict`` if its hash is already present."""
        if self._exists(
            "SELECT 1 FROM reference_tokens WHERE token_hash = ?", (record.token_hash,)
        ):
            raise Conflict("reference token already exists")
        self._db().execute(
            "INSERT INTO reference_tokens (token_hash, kind, claims, jti, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (record.token_hash, record.kind, record.claims, record.jti, record.expires_at),
        )

    # -- revocations ---------------------------------------------------------------------

    def insert_revocation(self, record: RevocationRecord) -> bool:
        """Store a revocation with a fresh ``seq``; ``record.seq`` is ignored.

        Return False if (level, target) is already present. If the new ``revoked_at`` or
        ``expires_at`` is later, the entry takes the later of each and a new ``seq``
        greater than every seq handed out before, so pollers of ``revocations_since``
        see the change.
        """
        conn = self._db()
        row = conn.execute(
            "SELECT seq, revoked_at, expires_at FROM revocations WHERE level = ? AND target = ?",
            (record.level, record.target),
        ).fetchone()
        insert = (
            "INSERT INTO revocations (level, target, revoked_at, expires_at) VALUES (?, ?, ?, ?)"
        )
        if row is None:
            conn.execute(
                insert, (record.level, record.target, record.revoked_at, record.expires_at)
            )
            return True
        seq, old_revoked_at, old_expires_at = int(row[0]), int(row[1]), float(row[2])
        revoked_at = max(old_revoked_at, record.revoked_at)
        expires_at = max(old_expires_at, record.expires_at)
        if (revoked_at, expires_at) != (old_revoked_at, old_expires_at):
            # Delete and re-insert: AUTOINCREMENT hands out a seq above every one used.
            conn.execute("DELETE FROM revocations WHERE seq = ?", (seq,))
            conn.execute(insert, (record.level, record.target, revoked_at, expires_at))
        return False

    # -- audit ---------------------------------------------------------------------------

    def audit_head(self) -> tuple[int, str]:
        """The true head: this transaction holds the write lock, so no one appends meanwhile."""
        head = _audit_head(self._db())
        self._head_seq = head[0]
        return head

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events; each ``seq`` must be greater than the head's, else ``Conflict``."""
        conn = self._db()
        head_seq = self._head_seq if self._head_seq is not None else _audit_head(conn)[0]
        rows: list[tuple[object, ...]] = []
        stamp: str | None = None  # events of one unit share a timestamp: parse it once
        seconds = 0.0
        for e in events:
            if e.seq <= head_seq:
                raise Conflict(f"audit seq {e.seq} is not after the head ({head_seq})")
            head_seq = e.seq
            if e.timestamp != stamp:
                stamp, seconds = e.timestamp, _timestamp_seconds(e.timestamp)
            rows.append(
                (
                    e.seq,
                    e.timestamp,
                    seconds,
                    e.event_type,
                    e.agent_id,
                    e.task_id,
                    e.orch_id,
                    e.detail,
                    e.resource,
                    e.outcome,
                    e.deleg_depth,
                    e.deleg_chain_hash,
                    e.request_id,
                    e.prev_hash,
                    e.hash,
                )
            )
        self._head_seq = None  # unknown until the insert has gone through whole
        conn.executemany(
            "INSERT INTO audit_events (seq, timestamp, ts, event_type, agent_id, task_id,"
            " orch_id, detail, resource, outcome, deleg_depth, deleg_chain_hash, request_id,"
            " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._head_seq = head_seq


# -- the store ---------------------------------------------------------------------------


class _ReaderSlot:
    """One thread's reader connection, closed when the thread's locals go or at close()."""

    __slots__ = ("__weakref__", "close", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # A thread that ends drops its threading.local and with it this slot; the
        # finalizer then closes the connection, so short-lived threads do not leak them.
        self.close = weakref.finalize(self, conn.close)


# Fair write turns between processes (SQLiteStore._writer_turn).
_TURN_POLL = 0.00005  # first pause of a waiter, and the stand-back poll
_TURN_POLL_MAX = 0.0002  # a waiter polls at least this often
_STAND_BACK = 0.002  # the longest a releaser waits for a waiter to take the turn
_STAND_BACK_PAUSE = 0.05  # after waiters failed to come: no standing back for this long
_STAND_BACK_MISSES = 3  # ... after this many in a row


def _held_by_others_quietly(fd: int) -> bool:
    """:func:`_held_by_others`, False when the probe itself fails (it is only a courtesy)."""
    try:
        return _held_by_others(fd)
    except OSError:
        return False


def _held_by_others(fd: int) -> bool:
    """True while another process holds a lock on ``fd``'s file (probed, then released)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class SQLiteStore:
    """:class:`tasklease.core.store.Store` on one SQLite file.

    ``SQLiteStore(path)`` creates the file (mode 0600) and its parent directory (0700) if
    missing and applies pending migrations. With ``migrate=False`` it refuses a database
    that is not at the current schema version (``SchemaError``: run
    ``tasklease db migrate``). A database newer than this code is always refused.

    ``busy_timeout`` is how long, in seconds, a transaction waits for another process's
    write lock before failing with ``Unavailable``.
    """

    local_reads = True  # see Store.local_reads

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        migrate: bool = True,
        busy_timeout: float = 5.0,
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
        self._busy_timeout = busy_timeout
        self._closed = False
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._turn_fds: tuple[int, int] | None = None  # see _writer_turn
        self._yield_until = 0.0  # see _writer_turn
        self._stand_back = _STAND_BACK
        self._stand_back_after = 0.0  # see _writer_turn
        self._stand_back_misses = 0
        self._local = threading.local()
        self._readers: weakref.WeakSet[_ReaderSlot] = weakref.WeakSet()
        self._readers_lock = threading.Lock()

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it is 0600 from the first byte; SQLite gives the
        # -wal and -shm files the same mode as the database file.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

        self._writer = self._connect(reader=False)
        try:
            self._prepare_writer()
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
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------

    @staticmethod
    def known_schema_version() -> int:
        """The newest schema version this code knows."""
        return len(_migrations())

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""
        with self._write_lock:
            return _schema_version(self._writer)

    def _check_schema(self) -> None:
        known = self.known_schema_version()
        current = _schema_version(self._writer)
        if current > known:
            raise _newer_error(current, known)
        if current < known:
            raise SchemaError(
                f"database schema version {current} is older than this tasklease "
                f"(needs {known}): run `tasklease db migrate`"
            )

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied.

        Safe to run from several processes at once: the version is re-read under the
        write lock, so each migration is applied exactly once. Raise ``SchemaError`` if the
        database is newer than this code or a migration fails.
        """
        migrations = _migrations()
        known = len(migrations)
        applied: list[int] = []
        with self._write_lock:
            for migration in migrations:
                if self._apply(migration, known):
                    applied.append(migration.version)
        return applied

    def _apply(self, migration: _Migration, known: int) -> bool:
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
                raise _newer_error(current, known)
            needed = current < migration.version
            if needed:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            raise SchemaError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}"
            ) from exc
        except BaseException:
            _rollback_quietly(conn)
            raise
        return needed

    # -- writes --------------------------------------------------------------------------

    def _begin(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Unavailable("storage is busy", reason=f"BEGIN IMMEDIATE failed: {exc}") from exc

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Take turns with writers in other processes (``--workers``) before BEGIN IMMEDIATE.

        SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between attempts, so a
        worker that found the write lock taken waited milliseconds after it was released.
        An advisory ``flock`` on ``<database>.writelock``, held for the transaction, hands
        the turn over within ~0.1 ms instead. It is only a queue in front of SQLite's own
        lock (which still decides), and it keeps ``busy_timeout``: past it, ``Unavailable``.

        The turn is fair between processes. ``flock`` is not: a process that releases the
        lock and asks again at once (a busy group committer does) gets it back before a
        waiter that polls, which then waits for many turns. So a waiter also holds a
        shared lock on ``<database>.writewait`` while it waits, and a process that finds
        that lock held when it releases its turn stands back before its next one, until
        the waiter has taken the turn (2 ms at most).
        """
        fds = self._turn_fds
        if fds is None:
            lock_fd = os.open(f"{self.path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                wait_fd = os.open(f"{self.path}.writewait", os.O_RDWR | os.O_CREAT, 0o600)
            except BaseException:
                os.close(lock_fd)
                raise
            fds = (lock_fd, wait_fd)
            for fd in fds:
                weakref.finalize(self, os.close, fd)
            self._turn_fds = fds
        turn, waiting = fds
        deadline = time.monotonic() + self._busy_timeout
        if self._yield_until:
            while _held_by_others_quietly(waiting):
                if time.monotonic() >= self._yield_until:
                    # The waiter did not come. Once may be a descheduled process; several
                    # times running is a frozen one: then stand back no more for a while,
                    # so it costs 2 ms per 50 ms, not 2 ms per transaction.
                    self._stand_back_misses += 1
                    if self._stand_back_misses >= _STAND_BACK_MISSES:
                        self._stand_back_after = time.monotonic() + _STAND_BACK_PAUSE
                        self._stand_back_misses = 0
                    break
                time.sleep(_TURN_POLL)  # a waiter in another process goes first
            else:
                self._stand_back_misses = 0
            self._yield_until = 0.0
        pause = _TURN_POLL
        announced = False
        try:
            while True:
                try:
                    fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Unavailable(
                            "storage is busy", reason="another process holds the write turn"
                        ) from None
                    if not announced:
                        # Fails only while a releaser probes the file: try again next time.
                        with contextlib.suppress(BlockingIOError):
                            fcntl.flock(waiting, fcntl.LOCK_SH | fcntl.LOCK_NB)
                            announced = True
                    time.sleep(pause)
                    pause = min(pause * 2, _TURN_POLL_MAX)
        finally:
            if announced:
                fcntl.flock(waiting, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
            # Only a courtesy: a failed probe must not turn a committed write into an error.
            now = time.monotonic()
            with contextlib.suppress(OSError):
                if now >= self._stand_back_after and _held_by_others(waiting):
                    self._yield_until = now + self._stand_back

    @contextmanager
    def write(self) -> Iterator[_SQLiteWriteTx]:
        """One transaction: commit on a clean exit, roll back everything on an exception.

        Raise ``Unavailable`` if the write lock cannot be had within ``busy_timeout`` or
        the commit fails (nothing was written). Not reentrant: calling ``write()`` inside
        ``write()`` raises ``RuntimeError`` (use the open transaction).
        """
        if self._write_owner == threading.get_ident():
            raise RuntimeError("write() is not reentrant: use the open transaction")
        with self._write_lock, self._writer_turn():
            if self._closed:
                raise RuntimeError("store is closed")
            self._write_owner = threading.get_ident()
            try:
                conn = self._writer
                self._begin(conn)
                tx = _SQLiteWriteTx(conn)
                try:
                    yield tx
                except BaseException:
                    tx._end()
                    _rollback_quietly(conn)
                    raise
                tx._end()
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    _rollback_quietly(conn)
                    raise Unavailable(
                        "storage could not commit", reason=f"COMMIT failed: {exc}"
                    ) from exc
            finally:
                self._write_owner = None

    def prune(self, now: float) -> int:
        """Delete revocations, used nonces and launch tokens with ``expires_at <= now``.

        Return the number of rows removed. Audit events are never touched.
        """
        with self.write() as tx:
            conn = tx._db()
            removed = 0
            for statement in (
                "DELETE FROM revocations WHERE expires_at <= ?",
                "DELETE FROM used_nonces WHERE expires_at <= ?",
                "DELETE FROM launch_tokens WHERE expires_at <= ?",
                "DELETE FROM reference_tokens WHERE expires_at <= ?",
                "DELETE FROM agent_sessions WHERE expires_at <= ?",
                "DELETE FROM discovery_bindings WHERE expires_at <= ?",
                "DELETE FROM leases WHERE expires_at <= ?",
            ):
                removed += conn.execute(statement, (now,)).rowcount
        return removed

    # -- reads ---------------------------------------------------------------------------

    def get_app(self, app_id: str) -> AppRecord | None:
        sql = _SELECT_APP + " WHERE app_id = ?"
        row = self._reader().execute(sql, (app_id,)).fetchone()
        return None if row is None else _app_from_row(row)

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None:
        sql = _SELECT_APP + " WHERE client_id = ?"
        row = self._reader().execute(sql, (client_id,)).fetchone()
        return None if row is None else _app_from_row(row)

    def list_apps(self) -> list[AppRecord]:
        """Newest first (by ``created_at``, ties by ``app_id`` descending)."""
        sql = _SELECT_APP + " ORDER BY created_at DESC, app_id DESC"
        return [_app_from_row(row) for row in self._reader().execute(sql).fetchall()]

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None:
        sql = _SELECT_LAUNCH + " WHERE token_hash = ?"
        row = self._reader().execute(sql, (token_hash,)).fetchone()
        return None if row is None else _launch_token_from_row(row)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        sql = _SELECT_AGENT + " WHERE agent_id = ?"
        row = self._reader().execute(sql, (agent_id,)).fetchone()
        return None if row is None else _agent_from_row(row)

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        sql = _SELECT_REVOCATION + " WHERE expires_at > ? ORDER BY seq"
        rows = self._reader().execute(sql, (now,)).fetchall()
        return [_revocation_from_row(row) for row in rows]

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """Point reads by the ``UNIQUE (level, target)`` index; never a scan."""
        sql = _SELECT_REVOCATION + " WHERE level = ? AND target = ?"
        found: dict[int, RevocationRecord] = {}
        with self._reading() as conn:
            for key in keys:
                row = conn.execute(sql, key).fetchone()
                if row is not None:
                    record = _revocation_from_row(row)
                    found[record.seq] = record
        return [found[seq] for seq in sorted(found)]

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        row = self._reader().execute(_SELECT_SESSION + " WHERE agent_id = ?", (agent_id,))
        found = row.fetchone()
        return None if found is None else _session_from_row(found)

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        sql = (
            _SELECT_SESSION + " WHERE heartbeat_required = 1 AND state = 'active'"
            " AND last_heartbeat < ? ORDER BY last_heartbeat, agent_id LIMIT ?"
        )
        rows = self._reader().execute(sql, (before, limit)).fetchall()
        return [_session_from_row(row) for row in rows]

    def get_discovery_binding(self, agent_id: str) -> DiscoveryBinding | None:
        sql = _SELECT_BINDING + " WHERE agent_id = ?"
        row = self._reader().execute(sql, (agent_id,)).fetchone()
        return None if row is None else _binding_from_row(row)

    def get_reference_token(self, token_hash: str) -> ReferenceTokenRecord | None:
        sql = _SELECT_REFERENCE + " WHERE token_hash = ?"
        row = self._reader().execute(sql, (token_hash,)).fetchone()
        return None if row is None else _reference_from_row(row)

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        sql = _SELECT_REVOCATION + " WHERE seq > ? ORDER BY seq"
        rows = self._reader().execute(sql, (seq,)).fetchall()
        return [_revocation_from_row(row) for row in rows]

    def audit_head(self) -> tuple[int, str]:
        return _audit_head(self._reader())

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Events matching every given filter, in seq order after offset/limit, and the count.

        Raise ``ValueError`` for a negative limit or offset.
        """
        if query.limit < 0 or query.offset < 0:
            raise ValueError("limit and offset must not be negative")
        # The WHERE clause is assembled from these constant fragments only; every value
        # is a bound parameter. Each equality filter has an index.
        clauses: list[str] = []
        params: list[object] = []
        for clause, value in (
            ("agent_id = ?", query.agent_id),
            ("task_id = ?", query.task_id),
            ("event_type = ?", query.event_type),
            ("outcome = ?", query.outcome),
            ("ts >= ?", query.since),
            ("ts <= ?", query.until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        count_sql = "SELECT COUNT(*) FROM audit_events" + where  # noqa: S608 (see above)
        page_sql = _SELECT_AUDIT + where + " ORDER BY seq LIMIT ? OFFSET ?"
        with self._reading() as conn:  # count and page from one snapshot
            total = int(conn.execute(count_sql, params).fetchone()[0])
            rows = conn.execute(page_sql, [*params, query.limit, query.offset]).fetchall()
        return [_audit_from_row(row) for row in rows], total

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in seq order.

        Keyset pagination (``seq > last``, never OFFSET): each batch is one index range
        read, however deep the walk. No statement stays open between batches, so a slow
        consumer does not pin a WAL snapshot (which would stop checkpoints).
        """
        if batch <= 0:
            raise ValueError("batch must be positive")
        sql = _SELECT_AUDIT + " WHERE seq > ? ORDER BY seq LIMIT ?"
        cursor = after_seq
        while True:
            rows = self._reader().execute(sql, (cursor, batch)).fetchall()
            yield from (_audit_from_row(row) for row in rows)
            if len(rows) < batch:
                return
            cursor = int(rows[-1][0])

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Wait for a running write, then close every connection. Closing twice is harmless."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            # Refresh the planner's statistics where it would help; cheap when not needed.
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA optimize")
            self._writer.close()
        with self._readers_lock:
            readers = list(self._readers)
            self._readers.clear()
        for slot in readers:
            slot.close()


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; the caller is already raising the real error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
