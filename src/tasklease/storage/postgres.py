"""The scale-out store: PostgreSQL through psycopg 3 and a ``psycopg_pool`` connection pool.

Several broker replicas share one database. What must hold across replicas is enforced
by the database, never by a process-local lock:

* A single-use launch token is consumed by one conditional ``UPDATE ... RETURNING``; a
  nonce by ``INSERT ... ON CONFLICT DO NOTHING``; app names and client ids, agent ids and
  launch token hashes by unique constraints. Exactly one of any number of concurrent
  callers, on any replica, wins.
* The audit log stays one chain: the head (last seq and hash) lives in a one-row table
  that every appending transaction locks with ``SELECT ... FOR UPDATE`` before it reads
  it. The core's group committer asks for the head once per batch, so replicas take turns
  per batch, not per event.
* Revocation ``seq`` values are drawn from a sequence while holding that same lock, so
  they commit in increasing order and a reader of ``revocations_since(last)`` never
  skips an entry that committed late with a smaller number.

Transactions run at READ COMMITTED on autocommit connections with explicit ``BEGIN``
/``COMMIT``; savepoints give each unit of a batch its own undo.

Change notification (the optional ``start_watch`` capability, see ``core.store``): a
transaction that stores a revocation sends ``pg_notify`` just before it commits, with
the highest seq, the commit's wall-clock time and the sending store's origin id; the
notification is delivered only if the commit succeeds. A watch holds one dedicated
connection that LISTENs on the channel from a background thread.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from tasklease.core.errors import Conflict, NotFound, Unavailable
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
from tasklease.storage import redact_url
from tasklease.storage.sqlite import SchemaError, _timestamp_seconds

__all__ = ["NOTIFY_CHANNEL", "PostgresStore"]

NOTIFY_CHANNEL = "tasklease_revocations"
_GENESIS_HASH = "0" * 64
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_xact_lock key that serializes migrations from several replicas ("tlmigrat").
_MIGRATION_LOCK = 0x746C6D6967726174
_log = logging.getLogger("tasklease.storage.postgres")

_Row = tuple[Any, ...]


# -- migrations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    name: str
    sql: str


@functools.cache
def _migrations() -> tuple[_Migration, ...]:
    """The numbered SQL files shipped in ``storage/migrations/postgres``, in order."""
    folder = importlib.resources.files("tasklease.storage") / "migrations" / "postgres"
    found: list[_Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None or not entry.is_file():
            continue
        found.append(_Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError("PostgreSQL migrations must be numbered 0001, 0002, ... without gaps")
    return tuple(found)


def _schema_version(conn: psycopg.Connection[_Row]) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _newer_error(current: int, known: int) -> SchemaError:
    return SchemaError(
        f"database schema version {current} is newer than this tasklease (knows {known}): "
        "upgrade tasklease"
    )


# -- statements --------------------------------------------------------------------------

_SELECT_APP = (
    "SELECT app_id, name, client_id, secret_hash, scopes, token_ttl, status,"
    " created_at, updated_at, created_by FROM apps"
)
_SELECT_LAUNCH = (
    "SELECT token_hash, agent_name, allowed_scope, max_ttl, single_use, created_at,"
    " expires_at, created_by, app_id, consumed_at, audience, principal FROM launch_tokens"
)
_SELECT_AGENT = (
    "SELECT agent_id, public_key, orch_id, task_id, scope, app_id, client_id,"
    " registered_at, status, cnf, audience FROM agents"
)
_SELECT_SESSION = (
    "SELECT agent_id, principal, heartbeat_required, last_heartbeat, resumes, state,"
    " expires_at FROM agent_sessions"
)
_SELECT_BINDING = (
    "SELECT agent_id, endpoint, issued_at, signature, expires_at FROM discovery_bindings"
)
_SELECT_REFERENCE = "SELECT token_hash, kind, claims, jti, expires_at FROM reference_tokens"
_SELECT_REVOCATION = "SELECT seq, level, target, revoked_at, expires_at FROM revocations"
_SELECT_AUDIT = (
    "SELECT seq, timestamp, event_type, agent_id, task_id, orch_id, detail, resource,"
    " outcome, deleg_depth, deleg_chain_hash, request_id, prev_hash, hash FROM audit_events"
)
_LOCK_HEAD = "SELECT seq, hash FROM audit_head WHERE id FOR UPDATE"
_INSERT_AUDIT = (
    "INSERT INTO audit_events (seq, timestamp, ts, event_type, agent_id, task_id, orch_id,"
    " detail, resource, outcome, deleg_depth, deleg_chain_hash, request_id, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# An extension draws a fresh seq, so readers of revocations_since see the change; the
# WHERE makes an entry that would not widen a no-op (no row returned).
_UPSERT_REVOCATION = (
    "INSERT INTO revocations (level, target, revoked_at, expires_at) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (level, target) DO UPDATE SET"
    " seq = nextval('revocation_seq'),"
    " revoked_at = GREATEST(revocations.revoked_at, EXCLUDED.revoked_at),"
    " expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)"
    " WHERE revocations.revoked_at < EXCLUDED.revoked_at"
    " OR revocations.expires_at < EXCLUDED.expires_at"
    " RETURNING seq, (xmax = 0) AS inserted"
)
_APP_CONSTRAINTS = {
    "apps_pkey": "app id already exists",
    "apps_name_key": "app name already exists",
    "apps_client_id_key": "app client_id already exists",
}


# -- row mapping -------------------------------------------------------------------------


def _app_from_row(row: _Row) -> AppRecord:
    app_id, name, client_id, secret_hash, scopes, token_ttl, status, created, updated, by = row
    return AppRecord(
        app_id=app_id,
        name=name,
        client_id=client_id,
        secret_hash=secret_hash,
        scopes=tuple(scopes),
        token_ttl=int(token_ttl),
        status=status,
        created_at=float(created),
        updated_at=float(updated),
        created_by=by,
    )


def _app_params(app: AppRecord) -> tuple[object, ...]:
    return (
        app.app_id,
        app.name,
        app.client_id,
        app.secret_hash,
        list(app.scopes),
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
        token_hash=token_hash,
        agent_name=agent_name,
        allowed_scope=tuple(scope),
        max_ttl=int(max_ttl),
        single_use=bool(single_use),
        created_at=float(created),
        expires_at=float(expires),
        created_by=by,
        app_id=app_id,
        consumed_at=None if used is None else float(used),
        audience=tuple(audience),
        principal=principal,
    )


def _agent_from_row(row: _Row) -> AgentRecord:
    (agent_id, public_key, orch_id, task_id, scope, app_id, client_id, registered, status, cnf,
     audience) = row  # fmt: skip
    return AgentRecord(
        agent_id=agent_id,
        public_key=bytes(public_key),
        orch_id=orch_id,
        task_id=task_id,
        scope=tuple(scope),
        app_id=app_id,
        client_id=client_id,
        registered_at=float(registered),
        status=status,
        cnf=cnf,
        audience=tuple(audience),
    )


def _session_from_row(row: _Row) -> AgentSession:
    agent_id, principal, required, last_heartbeat, resumes, state, expires_at = row
    return AgentSession(
        agent_id=agent_id,
        principal=principal,
        heartbeat_required=bool(required),
        last_heartbeat=float(last_heartbeat),
        resumes=int(resumes),
        state=state,
        expires_at=float(expires_at),
    )


def _binding_from_row(row: _Row) -> DiscoveryBinding:
    agent_id, endpoint, issued_at, signature, expires_at = row
    return DiscoveryBinding(
        agent_id=agent_id,
        endpoint=endpoint,
        issued_at=int(issued_at),
        signature=bytes(signature),
        expires_at=float(expires_at),
    )


def _reference_from_row(row: _Row) -> ReferenceTokenRecord:
    token_hash, kind, claims, jti, expires_at = row
    return ReferenceTokenRecord(
        token_hash=token_hash, kind=kind, claims=claims, jti=jti, expires_at=float(expires_at)
    )


def _revocation_from_row(row: _Row) -> RevocationRecord:
    seq, level, target, revoked_at, expires_at = row
    return RevocationRecord(
        level=level,
        target=target,
        revoked_at=int(revoked_at),
        expires_at=float(expires_at),
        seq=int(seq),
    )


def _audit_from_row(row: _Row) -> AuditEvent:
    # _SELECT_AUDIT lists the columns in AuditEvent's field order and the column types
    # map to exactly the field types (bigint/integer -> int, text -> str).
    return AuditEvent(*row)


# -- the write transaction ---------------------------------------------------------------


class _PostgresWriteTx:
    """Writes inside one transaction; valid only inside :meth:`PostgresStore.write`."""

    def __init__(self, conn: psycopg.Connection[_Row]) -> None:
        self._conn = conn
        self._open = True
        self._depth = 0  # savepoints open
        self._savepoints = 0  # savepoint names handed out
        # The savepoint depth at which the head row lock was taken, or None. A lock taken
        # inside a savepoint that rolls back is released with it.
        self._head_locked_at: int | None = None
        self.notify_seq = 0  # highest revocation seq written (0: none), for pg_notify

    def _db(self) -> psycopg.Connection[_Row]:
        if not self._open:
            raise RuntimeError("this write transaction has ended")
        return self._conn

    def _end(self) -> None:
        self._open = False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo this block's writes if it raises (and re-raise); the transaction goes on."""
        conn = self._db()
        self._savepoints += 1
        name = f"sp_{self._savepoints}"  # an int we made: safe to put in SQL
        conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        depth = self._depth
        try:
            yield
        except BaseException:
            self._depth = depth - 1
            if self._head_locked_at is not None and self._head_locked_at >= depth:
                self._head_locked_at = None
            # If the connection is gone this raises too; write() then fails the whole
            # transaction, which is fail-closed.
            conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self._depth = depth - 1
        if self._head_locked_at is not None and self._head_locked_at >= depth:
            self._head_locked_at = depth - 1
        conn.execute(f"RELEASE SAVEPOINT {name}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Run one statement in its own savepoint so its failure leaves the tx usable."""
        conn = self._db()
        conn.execute("SAVEPOINT sp_stmt")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO SAVEPOINT sp_stmt")
            conn.execute("RELEASE SAVEPOINT sp_stmt")
            raise
        conn.execute("RELEASE SAVEPOINT sp_stmt")

    def _exists(self, sql: str, params: _Row) -> bool:
        return self._db().execute(sql, params).fetchone() is not None

    # -- apps ----------------------------------------------------------------------------

    def insert_app(self, app: AppRecord) -> None:
        """Store a new app; raise ``Conflict`` if its app_id, name or client_id is taken.

        ``ON CONFLICT DO NOTHING`` waits for a concurrent insert of the same key to end, so
        two replicas cannot both create the name; the follow-up reads say which key clashed.
        """
        inserted = (
            self._db()
            .execute(
                "INSERT INTO apps (app_id, name, client_id, secret_hash, scopes, token_ttl,"
                " status, created_at, updated_at, created_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING app_id",
                _app_params(app),
            )
            .fetchone()
        )
        if inserted is not None:
            return
        if self._exists("SELECT 1 FROM apps WHERE app_id = %s", (app.app_id,)):
            raise Conflict("app id already exists")
        if self._exists("SELECT 1 FROM apps WHERE name = %s", (app.name,)):
            raise Conflict("app name already exists")
        raise Conflict("app client_id already exists")

    def update_app(self, app: AppRecord) -> None:
        """Replace the app with ``app.app_id``.

        Raise ``NotFound`` if there is none and ``Conflict`` if the new name or client_id
        belongs to another app (checked first for the message; the unique constraints
        decide when two replicas race).
        """
        if not self._exists("SELECT 1 FROM apps WHERE app_id = %s FOR UPDATE", (app.app_id,)):
            raise NotFound("app not found")
        if self._exists(
            "SELECT 1 FROM apps WHERE name = %s AND app_id <> %s", (app.name, app.app_id)
        ):
            raise Conflict("app name already exists")
        if self._exists(
            "SELECT 1 FROM apps WHERE client_id = %s AND app_id <> %s",
            (app.client_id, app.app_id),
        ):
            raise Conflict("app client_id already exists")
        try:
            with self._guard():
                self._db().execute(
                    "UPDATE apps SET name = %s, client_id = %s, secret_hash = %s, scopes = %s,"
                    " token_ttl = %s, status = %s, created_at = %s, updated_at = %s,"
                    " created_by = %s WHERE app_id = %s",
                    (*_app_params(app)[1:], app.app_id),
                )
        except pg_errors.UniqueViolation as exc:
            name = exc.diag.constraint_name or ""
            raise Conflict(_APP_CONSTRAINTS.get(name, "app already exists")) from None

    # -- launch tokens and nonces --------------------------------------------------------

    def insert_launch_token(self, record: LaunchTokenRecord) -> None:
        """Store a launch token; raise ``Conflict`` if its hash is already present."""
        cursor = self._db().execute(
            "INSERT INTO launch_tokens (token_hash, agent_name, allowed_scope, max_ttl,"
            " single_use, created_at, expires_at, created_by, app_id, consumed_at, audience,"
            " principal) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                record.token_hash,
                record.agent_name,
                list(record.allowed_scope),
                record.max_ttl,
                record.single_use,
                record.created_at,
                record.expires_at,
                record.created_by,
                record.app_id,
                record.consumed_at,
                list(record.audience),
                record.principal,
            ),
        )
        if cursor.rowcount != 1:
            raise Conflict("launch token already exists")

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        conn = self._db()
        # One conditional UPDATE: a concurrent consumer waits for our row lock, then
        # re-checks ``consumed_at IS NULL`` on the committed row and finds nothing.
        consumed = conn.execute(
            "UPDATE launch_tokens SET consumed_at = %s WHERE token_hash = %s AND single_use"
            " AND consumed_at IS NULL AND expires_at > %s RETURNING 1",
            (now, token_hash, now),
        ).fetchone()
        if consumed is not None:
            return True
        return self._exists(
            "SELECT 1 FROM launch_tokens WHERE token_hash = %s AND NOT single_use"
            " AND expires_at > %s",
            (token_hash, now),
        )

    def consume_nonce(self, nonce_hash: str, expires_at: float) -> bool:
        cursor = self._db().execute(
            "INSERT INTO used_nonces (nonce_hash, expires_at) VALUES (%s, %s)"
            " ON CONFLICT (nonce_hash) DO NOTHING",
            (nonce_hash, expires_at),
        )
        return cursor.rowcount == 1

    # -- agents --------------------------------------------------------------------------

    def insert_agent(self, agent: AgentRecord) -> None:
        """Store a new agent; raise ``Conflict`` if its agent_id is already present."""
        cursor = self._db().execute(
            "INSERT INTO agents (agent_id, public_key, orch_id, task_id, scope, app_id,"
            " client_id, registered_at, status, cnf, audience)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                agent.agent_id,
                agent.public_key,
                agent.orch_id,
                agent.task_id,
                list(agent.scope),
                agent.app_id,
                agent.client_id,
                agent.registered_at,
                agent.status,
                agent.cnf,
                list(agent.audience),
            ),
        )
        if cursor.rowcount != 1:
            raise Conflict("agent already exists")

    def set_agent_status(self, agent_id: str, status: str) -> None:
        """Set an agent's status; an unknown agent_id is not an error (nothing to mark)."""
        self._db().execute("UPDATE agents SET status = %s WHERE agent_id = %s", (status, agent_id))

    # -- by-reference tokens, agent sessions, leases, discovery -------------------------

    def insert_reference_token(self, record: ReferenceTokenRecord) -> None:
        """Store a by-reference token; raise ``Conflict`` if its hash is already present."""
        cursor = self._db().execute(
            "INSERT INTO reference_tokens (token_hash, kind, claims, jti, expires_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (record.token_hash, record.kind, record.claims, record.jti, record.expires_at),
        )
        if cursor.rowcount != 1:
            raise Conflict("reference token already exists")

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        """The session, row-locked until this transaction ends: a read-modify-write of a
        session on one replica cannot interleave with another replica's."""
        row = (
            self._db()
            .execute(_SELECT_SESSION + " WHERE agent_id = %s FOR UPDATE", (agent_id,))
            .fetchone()
        )
        return None if row is None else _session_from_row(row)

    def put_agent_session(self, session: AgentSession) -> None:
        self._db().execute(
            "INSERT INTO agent_sessions (agent_id, principal, heartbeat_required,"
            " last_heartbeat, resumes, state, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (agent_id) DO UPDATE SET principal = EXCLUDED.principal,"
            " heartbeat_required = EXCLUDED.heartbeat_required,"
            " last_heartbeat = EXCLUDED.last_heartbeat, resumes = EXCLUDED.resumes,"
            " state = EXCLUDED.state, expires_at = EXCLUDED.expires_at",
            (
                session.agent_id,
                session.principal,
                session.heartbeat_required,
                session.last_heartbeat,
                session.resumes,
                session.state,
                session.expires_at,
            ),
        )

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take the lease if free, expired or already ours: one upsert. On a conflict
        PostgreSQL locks the row and evaluates the WHERE on its latest committed version,
        so two replicas cannot both take it."""
        cursor = self._db().execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
            " expires_at = EXCLUDED.expires_at"
            " WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= %s",
            (name, holder, expires_at, now),
        )
        return cursor.rowcount == 1

    def put_discovery_binding(self, binding: DiscoveryBinding) -> None:
        self._db().execute(
            "INSERT INTO discovery_bindings (agent_id, endpoint, issued_at, signature,"
            " expires_at) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (agent_id) DO UPDATE SET endpoint = EXCLUDED.endpoint,"
            " issued_at = EXCLUDED.issued_at, signature = EXCLUDED.signature,"
            " expires_at = EXCLUDED.expires_at",
            (
                binding.agent_id,
                binding.endpoint,
                binding.issued_at,
                binding.signature,
                binding.expires_at,
            ),
        )

    # -- revocations ---------------------------------------------------------------------

    def insert_revocation(self, record: RevocationRecord) -> bool:
        """Store a revocation with a fresh ``seq``; ``record.seq`` is ignored.

        Return False if (level, target) is already present; a later ``revoked_at`` or
        ``expires_at`` widens it (each takes its maximum) under a new, larger ``seq``.
        The head lock is taken first, so seqs commit in increasing order across replicas.
        """
        self._lock_head()
        row = (
            self._db()
            .execute(
                _UPSERT_REVOCATION,
                (record.level, record.target, record.revoked_at, record.expires_at),
            )
            .fetchone()
        )
        if row is None:
            return False
        self.notify_seq = max(self.notify_seq, int(row[0]))
        return bool(row[1])

    # -- audit ---------------------------------------------------------------------------

    def _lock_head(self) -> tuple[int, str]:
        row = self._db().execute(_LOCK_HEAD).fetchone()
        if row is None:
            raise SchemaError("the audit_head row is missing: the schema is damaged")
        if self._head_locked_at is None:
            self._head_locked_at = self._depth
        return int(row[0]), str(row[1])

    def audit_head(self) -> tuple[int, str]:
        """(last seq, last hash), read under the head row lock, which this transaction then
        holds until it ends: no other replica can append meanwhile."""
        return self._lock_head()

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events; each ``seq`` must be greater than the head's, else ``Conflict``."""
        if not events:
            return
        head_seq, _ = self._lock_head()
        rows: list[tuple[object, ...]] = []
        for e in events:
            if e.seq <= head_seq:
                raise Conflict(f"audit seq {e.seq} is not after the head ({head_seq})")
            head_seq = e.seq
            rows.append(
                (
                    e.seq,
                    e.timestamp,
                    _timestamp_seconds(e.timestamp),
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
        conn = self._db()
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT_AUDIT, rows)
        conn.execute(
            "UPDATE audit_head SET seq = %s, hash = %s WHERE id", (events[-1].seq, events[-1].hash)
        )


# -- the watch -----------------------------------------------------------------------------


class _Watch:
    """A LISTEN connection on a background thread; see :meth:`PostgresStore.start_watch`."""

    def __init__(
        self,
        conninfo: str,
        origin: str,
        on_change: Callable[[float | None], None],
        interval: float,
        connect_timeout: float,
    ) -> None:
        self._conninfo = conninfo
        self._origin = origin
        self._on_change = on_change
        self._interval = interval
        self._connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="tasklease-pg-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _deliver(self, committed_at: float | None) -> None:
        try:
            self._on_change(committed_at)
        except Exception as exc:  # noqa: BLE001 - the watch must outlive a failed refresh
            if not self._failing:
                _log.warning("revocation refresh failed: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout)),
                ) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self._failing:
                        _log.warning("revocation watch reconnected")
                    backoff = 0.05
                    # Whatever was committed while we were not listening.
                    self._deliver(None)
                    self._listen(conn)
            except psycopg.Error as exc:
                if not self._failing:
                    _log.warning("revocation watch lost its connection: %s", exc)
                self._failing = True
                # The broker is no longer confirmed current; it fails closed once its
                # staleness bound passes without a successful check-in.
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _listen(self, conn: psycopg.Connection[_Row]) -> None:
        next_check = time.monotonic() + self._interval
        while not self._stop.is_set():
            wait = max(0.0, min(0.2, next_check - time.monotonic()))
            for notify in conn.notifies(timeout=wait):
                self._deliver(self._commit_time(notify.payload))
            if time.monotonic() >= next_check:
                # A round trip on the LISTEN connection: every notification committed
                # before it was sent has now been received, so a refresh after it is
                # current as of now. It also proves the connection is alive.
                conn.execute("SELECT 1")
                self._deliver(None)
                next_check = time.monotonic() + self._interval

    def _commit_time(self, payload: str) -> float | None:
        """The commit time in a notification payload ``"<seq> <time> <origin>"``.

        None for our own store's notifications (it applied them itself) or a payload we
        cannot read (the refresh still runs).
        """
        parts = payload.split()
        if len(parts) != 3 or parts[2] == self._origin:
            return None
        try:
            return float(parts[1])
        except ValueError:
            return None


# -- the store ---------------------------------------------------------------------------


class PostgresStore:
    """:class:`tasklease.core.store.Store` on a PostgreSQL database, shareable by replicas.

    ``PostgresStore(url)`` connects, then applies pending migrations (``migrate=True``)
    or, with ``migrate=False``, refuses a database that is not at the current schema
    version (``SchemaError``: run ``tasklease db migrate``). A database newer than this
    code is always refused. Raise ``Unavailable`` if the database cannot be reached.

    ``pool_timeout`` is how long, in seconds, an operation waits for a connection before
    failing with ``Unavailable`` (while the database is down, requests fail after this).
    """

    local_reads = False  # see Store.local_reads

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        pool_min: int = 1,
        pool_max: int = 10,
        pool_timeout: float = 3.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self._conninfo = url
        self._connect_timeout = connect_timeout
        self._closed = False
        self._local = threading.local()
        self._origin = os.urandom(6).hex()
        self._watches: list[_Watch] = []
        self._pool: ConnectionPool[psycopg.Connection[_Row]] = ConnectionPool(
            url,
            min_size=pool_min,
            max_size=pool_max,
            timeout=pool_timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            name="tasklease",
            # Give up a reconnection attempt after 5 s rather than psycopg_pool's 5 min of
            # doubling delays: the next request starts a fresh attempt (1 s delay), so a
            # replica recovers within seconds of the database's return.
            reconnect_timeout=5.0,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout + 1)
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
            self._pool.close()
            raise

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[_Row]]:
        """A pooled connection; ``Unavailable`` if none can be had in ``pool_timeout``."""
        if self._closed:
            raise RuntimeError("store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable("storage is unavailable", reason=f"no connection: {exc}") from None

    def _read(self, work: Callable[[psycopg.Connection[_Row]], Any]) -> Any:
        """Run a read; after a connection failure, drop dead pooled connections and retry
        once (after a database restart every idle connection in the pool is dead)."""
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
                    return work(conn)
            except psycopg.OperationalError as exc:
                if attempt == 2 or self._closed:
                    raise Unavailable("storage is unavailable", reason=str(exc)) from None
                self._pool.check()
            except psycopg.Error as exc:
                raise Unavailable("storage error", reason=f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema --------------------------------------------------------------------------

    @staticmethod
    def known_schema_version() -> int:
        """The newest schema version this code knows."""
        return len(_migrations())

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""
        return int(self._read(_schema_version))

    def _check_schema(self) -> None:
        known = self.known_schema_version()
        current = self.schema_version()
        if current > known:
            raise _newer_error(current, known)
        if current < known:
            raise SchemaError(
                f"database schema version {current} is older than this tasklease "
                f"(needs {known}): run `tasklease db migrate`"
            )

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied.

        Safe to run from several replicas at once: each migration transaction takes one
        advisory lock and re-reads the version under it. Raise ``SchemaError`` if the
        database is newer than this code or a migration fails.
        """
        migrations = _migrations()
        known = len(migrations)
        applied: list[int] = []
        with self._connection() as conn:
            for migration in migrations:
                if self._apply(conn, migration, known):
                    applied.append(migration.version)
        return applied

    def _apply(self, conn: psycopg.Connection[_Row], migration: _Migration, known: int) -> bool:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at double precision NOT NULL)"
                )
                current = _schema_version(conn)
                if current > known:
                    raise _newer_error(current, known)
                if current >= migration.version:
                    return False
                # A migration file holds several statements and no parameters: psycopg
                # sends it as one simple query, inside this transaction.
                conn.execute(migration.sql.encode("utf-8"))
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, time.time()),
                )
        except psycopg.Error as exc:
            raise SchemaError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}"
            ) from exc
        return True

    # -- writes --------------------------------------------------------------------------

    def _begin(self) -> tuple[contextlib.ExitStack, psycopg.Connection[_Row]]:
        """A connection with a transaction begun; retry once past a dead pooled connection."""
        for attempt in (1, 2):
            stack = contextlib.ExitStack()
            try:
                conn = stack.enter_context(self._connection())
                conn.execute("BEGIN")
                return stack, conn
            except psycopg.OperationalError as exc:
                stack.close()
                if attempt == 2 or self._closed:
                    raise Unavailable("storage is unavailable", reason=f"BEGIN: {exc}") from None
                self._pool.check()
            except BaseException:
                stack.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def write(self) -> Iterator[_PostgresWriteTx]:
        """One transaction: commit on a clean exit, roll back everything on an exception.

        Raise ``Unavailable`` if no connection can be had or the commit fails. Not
        reentrant within a thread: ``write()`` inside ``write()`` raises ``RuntimeError``.
        Transactions on different threads (and replicas) run concurrently; those that
        append audit events or revocations take turns on the head lock.
        """
        if getattr(self._local, "writing", False):
            raise RuntimeError("write() is not reentrant: use the open transaction")
        if self._closed:
            raise RuntimeError("store is closed")
        self._local.writing = True
        try:
            stack, conn = self._begin()
            with stack:
                tx = _PostgresWriteTx(conn)
                try:
                    yield tx
                except BaseException:
                    tx._end()
                    _rollback_quietly(conn)
                    raise
                tx._end()
                try:
                    if tx.notify_seq:
                        # Sent at commit: delivered to listeners only if the commit holds.
                        payload = f"{tx.notify_seq} {time.time():.6f} {self._origin}"
                        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))
                    conn.execute("COMMIT")
                except psycopg.Error as exc:
                    _rollback_quietly(conn)
                    raise Unavailable(
                        "storage could not commit", reason=f"COMMIT failed: {exc}"
                    ) from exc
        finally:
            self._local.writing = False

    def prune(self, now: float) -> int:
        """Delete revocations, used nonces and launch tokens with ``expires_at <= now``.

        Return the number of rows removed. Audit events are never touched.
        """
        with self.write() as tx:
            conn = tx._db()
            removed = 0
            for statement in (
                "DELETE FROM revocations WHERE expires_at <= %s",
                "DELETE FROM used_nonces WHERE expires_at <= %s",
                "DELETE FROM launch_tokens WHERE expires_at <= %s",
                "DELETE FROM reference_tokens WHERE expires_at <= %s",
                "DELETE FROM agent_sessions WHERE expires_at <= %s",
                "DELETE FROM discovery_bindings WHERE expires_at <= %s",
                "DELETE FROM leases WHERE expires_at <= %s",
            ):
                removed += conn.execute(statement, (now,)).rowcount
        return removed

    # -- reads ---------------------------------------------------------------------------

    def _one(self, sql: str, params: _Row) -> _Row | None:
        row: _Row | None = self._read(lambda conn: conn.execute(sql, params).fetchone())
        return row

    def _all(self, sql: str, params: _Row = ()) -> list[_Row]:
        rows: list[_Row] = self._read(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    def get_app(self, app_id: str) -> AppRecord | None:
        row = self._one(_SELECT_APP + " WHERE app_id = %s", (app_id,))
        return None if row is None else _app_from_row(row)

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None:
        row = self._one(_SELECT_APP + " WHERE client_id = %s", (client_id,))
        return None if row is None else _app_from_row(row)

    def list_apps(self) -> list[AppRecord]:
        """Newest first (by ``created_at``, ties by ``app_id`` descending)."""
        rows = self._all(_SELECT_APP + " ORDER BY created_at DESC, app_id DESC")
        return [_app_from_row(row) for row in rows]

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None:
        row = self._one(_SELECT_LAUNCH + " WHERE token_hash = %s", (token_hash,))
        return None if row is None else _launch_token_from_row(row)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        row = self._one(_SELECT_AGENT + " WHERE agent_id = %s", (agent_id,))
        return None if row is None else _agent_from_row(row)

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        rows = self._all(_SELECT_REVOCATION + " WHERE expires_at > %s ORDER BY seq", (now,))
        return [_revocation_from_row(row) for row in rows]

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        rows = self._all(_SELECT_REVOCATION + " WHERE seq > %s ORDER BY seq", (seq,))
        return [_revocation_from_row(row) for row in rows]

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        """Point reads by the ``(level, target)`` unique index, in one statement."""
        if not keys:
            return []
        levels = [level for level, _ in keys]
        targets = [target for _, target in keys]
        rows = self._all(
            _SELECT_REVOCATION + " WHERE (level, target) IN"  # noqa: S608 - constant SQL
            " (SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY seq",
            (levels, targets),
        )
        return [_revocation_from_row(row) for row in rows]

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        row = self._one(_SELECT_SESSION + " WHERE agent_id = %s", (agent_id,))
        return None if row is None else _session_from_row(row)

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        rows = self._all(
            _SELECT_SESSION + " WHERE heartbeat_required AND state = 'active'"
            " AND last_heartbeat < %s ORDER BY last_heartbeat, agent_id LIMIT %s",
            (before, limit),
        )
        return [_session_from_row(row) for row in rows]

    def get_discovery_binding(self, agent_id: str) -> DiscoveryBinding | None:
        row = self._one(_SELECT_BINDING + " WHERE agent_id = %s", (agent_id,))
        return None if row is None else _binding_from_row(row)

    def get_reference_token(self, token_hash: str) -> ReferenceTokenRecord | None:
        row = self._one(_SELECT_REFERENCE + " WHERE token_hash = %s", (token_hash,))
        return None if row is None else _reference_from_row(row)

    def audit_head(self) -> tuple[int, str]:
        row = self._one("SELECT seq, hash FROM audit_head WHERE id", ())
        if row is None:
            return 0, _GENESIS_HASH
        return int(row[0]), str(row[1])

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Events matching every given filter, in seq order after offset/limit, and the count.

        Raise ``ValueError`` for a negative limit or offset.
        """
        if query.limit < 0 or query.offset < 0:
            raise ValueError("limit and offset must not be negative")
        # The WHERE clause is assembled from these constant fragments only; every value
        # is a bound parameter.
        clauses: list[str] = []
        params: list[object] = []
        for clause, value in (
            ("agent_id = %s", query.agent_id),
            ("task_id = %s", query.task_id),
            ("event_type = %s", query.event_type),
            ("outcome = %s", query.outcome),
            ("ts >= %s", query.since),
            ("ts <= %s", query.until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        count_sql = "SELECT COUNT(*) FROM audit_events" + where  # noqa: S608 (see above)
        page_sql = _SELECT_AUDIT + where + " ORDER BY seq LIMIT %s OFFSET %s"

        def work(conn: psycopg.Connection[_Row]) -> tuple[list[AuditEvent], int]:
            # Count and page from one snapshot.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                counted = conn.execute(count_sql, params).fetchone()
                rows = conn.execute(page_sql, [*params, query.limit, query.offset]).fetchall()
            total = int(counted[0]) if counted else 0
            return [_audit_from_row(row) for row in rows], total

        result: tuple[list[AuditEvent], int] = self._read(work)
        return result

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in seq order (keyset pagination: each batch
        is one index range read, and no connection is held between batches)."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        sql = _SELECT_AUDIT + " WHERE seq > %s ORDER BY seq LIMIT %s"
        cursor = after_seq
        while True:
            rows = self._all(sql, (cursor, batch))
            yield from (_audit_from_row(row) for row in rows)
            if len(rows) < batch:
                return
            cursor = int(rows[-1][0])

    # -- change notification -------------------------------------------------------------

    def start_watch(
        self, on_change: Callable[[float | None], None], *, interval: float = 1.0
    ) -> _Watch:
        """Follow revocations other processes commit (the ``core.store`` watch capability).

        A background thread LISTENs on a dedicated connection and calls
        ``on_change(committed_at)`` with the committing process's wall-clock commit time
        for each notification from another store, ``on_change(None)`` for our own, after
        every (re)connect (to reload what was missed), and every ``interval`` seconds
        after a round trip on the LISTEN connection (a check-in: a refresh that follows
        it is current). While the database is unreachable it does not call at all and
        reconnects with a backoff of at most one second. ``close()`` the returned handle.
        """
        if self._closed:
            raise RuntimeError("store is closed")
        watch = _Watch(self._conninfo, self._origin, on_change, interval, self._connect_timeout)
        self._watches.append(watch)
        return watch

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


def _rollback_quietly(conn: psycopg.Connection[_Row]) -> None:
    """Roll back if a transaction is open; the caller is already raising the real error."""
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
