"""One SQL dialect's spelling of the shared statements, and the row conversions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from tasklease.core.errors import Conflict
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AuditEvent,
    AuditQuery,
    DiscoveryBinding,
    LaunchTokenRecord,
    OperatorRecord,
    ReferenceTokenRecord,
    RevocationRecord,
)
from tasklease.storage._sql.schema import Migration, migrations

__all__ = [
    "GENESIS_HASH",
    "SELECT_REVOCATION",
    "Dialect",
    "Row",
    "audit_rows",
    "binding_from_row",
    "reference_from_row",
    "revocation_from_row",
    "session_from_row",
    "timestamp_seconds",
]

# A fetched row: the drivers type rows as Any; the mappers below convert each column.
Row = tuple[Any, ...]

GENESIS_HASH = "0" * 64


def timestamp_seconds(timestamp: str) -> float:
    """Unix seconds of an RFC 3339 timestamp; it must carry an offset (``Z`` or ``±hh:mm``).

    The memory store has the same function: keep the two in step.
    """
    parsed = datetime.fromisoformat(timestamp)
    if parsed.tzinfo is None:
        raise ValueError(f"audit timestamp {timestamp!r} has no UTC offset")
    return parsed.timestamp()


# -- columns and statements --------------------------------------------------------------
# Each list is in its record's field order: the mappers below unpack rows in that order.

_APP = (
    "app_id, name, client_id, secret_hash, scopes, token_ttl, status, created_at,"
    " updated_at, created_by"
)
_LAUNCH = (
    "token_hash, agent_name, allowed_scope, max_ttl, single_use, created_at, expires_at,"
    " created_by, app_id, consumed_at, audience, principal, max_uses, uses, allow_resume"
)
_AGENT = (
    "agent_id, public_key, orch_id, task_id, scope, app_id, client_id, registered_at,"
    " status, cnf, audience, token_ttl, allow_resume"
)
_OPERATOR = "name, role, secret_hash, public_key, status, created_at, updated_at, created_by"
_SESSION = "agent_id, principal, heartbeat_required, last_heartbeat, resumes, state, expires_at"
_BINDING = "agent_id, endpoint, issued_at, signature, expires_at"
_REFERENCE = "token_hash, kind, claims, jti, expires_at"
_AUDIT = (
    "seq, timestamp, event_type, agent_id, task_id, orch_id, detail, resource, outcome,"
    " deleg_depth, deleg_chain_hash, request_id, prev_hash, hash"
)
# As stored: ts (the timestamp in Unix seconds, for range filters) follows the timestamp.
_AUDIT_STORED = _AUDIT.replace("timestamp,", "timestamp, ts,", 1)

SELECT_REVOCATION = "SELECT seq, level, target, revoked_at, expires_at FROM revocations"
# Built from the constant column lists above only, here and below.
_SELECT_APP = f"SELECT {_APP} FROM apps"  # noqa: S608
_SELECT_LAUNCH = f"SELECT {_LAUNCH} FROM launch_tokens"  # noqa: S608
_SELECT_AGENT = f"SELECT {_AGENT} FROM agents"  # noqa: S608
_SELECT_OPERATOR = f"SELECT {_OPERATOR} FROM operators"  # noqa: S608
_SELECT_SESSION = f"SELECT {_SESSION} FROM agent_sessions"  # noqa: S608
_SELECT_BINDING = f"SELECT {_BINDING} FROM discovery_bindings"  # noqa: S608
_SELECT_REFERENCE = f"SELECT {_REFERENCE} FROM reference_tokens"  # noqa: S608
_SELECT_AUDIT = f"SELECT {_AUDIT} FROM audit_events"  # noqa: S608

# What prune() empties of rows with expires_at <= now. Audit events are never pruned.
_EXPIRING = (
    "revocations",
    "used_nonces",
    "launch_tokens",
    "reference_tokens",
    "agent_sessions",
    "discovery_bindings",
    "leases",
)


def _insert(table: str, columns: str) -> str:
    values = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({values})"  # noqa: S608


def _upsert(table: str, columns: str) -> str:
    """An upsert by the first column (the primary key) that replaces every other one."""
    key, *rest = (column.strip() for column in columns.split(","))
    updates = ", ".join(f"{column} = excluded.{column}" for column in rest)
    return f"{_insert(table, columns)} ON CONFLICT ({key}) DO UPDATE SET {updates}"


class Dialect:
    """One dialect's spelling of the shared statements, and its row conversions.

    The statements are written below with ``?`` placeholders and turned into
    ``placeholder`` once. ``is_set`` tests a boolean column (``{}`` is the column):
    spelled as the dialect's partial indexes spell it, which the planners match by its
    text. ``for_update`` ends a read inside a write transaction that locks
    the row it reads. ``load_scopes`` and ``dump_scopes`` convert a scope list column.
    """

    def __init__(
        self,
        *,
        name: str,
        folder: str,
        placeholder: str,
        is_set: str,
        for_update: str,
        load_scopes: Callable[[Any], tuple[str, ...]],
        dump_scopes: Callable[[Sequence[str]], object],
    ) -> None:
        self.name = name
        self.folder = folder
        self._load_scopes = load_scopes
        self._dump_scopes = dump_scopes

        # Every statement is built from constant text and the constructor's fragments,
        # which the store modules pass as literals: no value ever reaches the SQL text.
        def q(sql: str) -> str:
            if placeholder == "?":
                return sql
            # A literal % would need doubling for a %s driver; the statements have none.
            if "%" in sql:
                raise ValueError(f"statement holds a literal %: {sql!r}")
            return sql.replace("?", placeholder)

        # reads
        self.get_app = q(f"{_SELECT_APP} WHERE app_id = ?")
        self.get_app_by_client_id = q(f"{_SELECT_APP} WHERE client_id = ?")
        self.list_apps = f"{_SELECT_APP} ORDER BY created_at DESC, app_id DESC"
        self.get_launch_token = q(f"{_SELECT_LAUNCH} WHERE token_hash = ?")
        self.get_agent = q(f"{_SELECT_AGENT} WHERE agent_id = ?")
        self.get_operator = q(f"{_SELECT_OPERATOR} WHERE name = ?")
        self.list_operators = f"{_SELECT_OPERATOR} ORDER BY name"
        self.load_revocations = q(f"{SELECT_REVOCATION} WHERE expires_at > ? ORDER BY seq")
        self.revocations_since = q(f"{SELECT_REVOCATION} WHERE seq > ? ORDER BY seq")
        self.get_session = q(f"{_SELECT_SESSION} WHERE agent_id = ?")
        self.silent_agents = q(
            f"{_SELECT_SESSION} WHERE {is_set.format('heartbeat_required')}"
            " AND state = 'active' AND last_heartbeat < ? ORDER BY last_heartbeat, agent_id"
            " LIMIT ?"
        )
        self.get_binding = q(f"{_SELECT_BINDING} WHERE agent_id = ?")
        self.get_reference = q(f"{_SELECT_REFERENCE} WHERE token_hash = ?")
        self.audit_after = q(f"{_SELECT_AUDIT} WHERE seq > ? ORDER BY seq LIMIT ?")
        self._audit_filters = tuple(
            q(clause)
            for clause in (
                "agent_id = ?",
                "task_id = ?",
                "event_type = ?",
                "outcome = ?",
                "ts >= ?",
                "ts <= ?",
            )
        )
        self._audit_page = q(" ORDER BY seq LIMIT ? OFFSET ?")

        # writes
        self.insert_app = q(f"{_insert('apps', _APP)} ON CONFLICT DO NOTHING")
        self.app_id_taken = q("SELECT 1 FROM apps WHERE app_id = ?")
        self.app_name_taken = q("SELECT 1 FROM apps WHERE name = ?")
        self.lock_app = q(f"SELECT 1 FROM apps WHERE app_id = ?{for_update}")  # noqa: S608
        self.other_app_named = q("SELECT 1 FROM apps WHERE name = ? AND app_id <> ?")
        self.other_app_client_id = q("SELECT 1 FROM apps WHERE client_id = ? AND app_id <> ?")
        self.update_app = q(
            "UPDATE apps SET name = ?, client_id = ?, secret_hash = ?, scopes = ?,"
            " token_ttl = ?, status = ?, created_at = ?, updated_at = ?, created_by = ?"
            " WHERE app_id = ?"
        )
        self.insert_operator = q(f"{_insert('operators', _OPERATOR)} ON CONFLICT DO NOTHING")
        self.update_operator = q(
            "UPDATE operators SET role = ?, secret_hash = ?, public_key = ?, status = ?,"
            " created_at = ?, updated_at = ?, created_by = ? WHERE name = ?"
        )
        self.insert_launch_token = q(f"{_insert('launch_tokens', _LAUNCH)} ON CONFLICT DO NOTHING")
        # One use taken, and the time of the last one recorded, in one conditional UPDATE.
        self.consume_launch_token = q(
            "UPDATE launch_tokens SET uses = uses + 1,"
            " consumed_at = CASE WHEN uses + 1 >= max_uses THEN ? ELSE consumed_at END"
            " WHERE token_hash = ? AND uses < max_uses AND expires_at > ?"
        )
        self.consume_nonce = q(
            "INSERT INTO used_nonces (nonce_hash, expires_at) VALUES (?, ?)"
            " ON CONFLICT (nonce_hash) DO NOTHING"
        )
        self.insert_agent = q(f"{_insert('agents', _AGENT)} ON CONFLICT DO NOTHING")
        self.set_agent_status = q("UPDATE agents SET status = ? WHERE agent_id = ?")
        self.lock_session = q(f"{_SELECT_SESSION} WHERE agent_id = ?{for_update}")
        self.put_session = q(_upsert("agent_sessions", _SESSION))
        self.acquire_lease = q(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            " expires_at = excluded.expires_at"
            " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?"
        )
        self.put_binding = q(_upsert("discovery_bindings", _BINDING))
        self.insert_reference = q(
            f"{_insert('reference_tokens', _REFERENCE)} ON CONFLICT DO NOTHING"
        )
        self.insert_audit = q(_insert("audit_events", _AUDIT_STORED))
        # migrations: the version a migration brought the schema to
        self.record_migration = q(_insert("schema_version", "version, name, applied_at"))
        self.prune = tuple(
            q(f"DELETE FROM {table} WHERE expires_at <= ?")  # noqa: S608
            for table in _EXPIRING
        )
        # One row (id 1): the greatest safe horizon any process recorded (core.horizon).
        self.safe_horizon = "SELECT horizon FROM safe_horizon WHERE id = 1"
        self.raise_safe_horizon = q(
            "INSERT INTO safe_horizon (id, horizon) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET horizon = excluded.horizon"
            " WHERE safe_horizon.horizon < excluded.horizon"
        )

    def migrations(self) -> tuple[Migration, ...]:
        """The numbered SQL files in ``storage/migrations/<folder>``, in order.

        Raise ``SchemaError`` if they are not numbered 0001, 0002, ... without gaps.
        """
        return migrations(self.folder, self.name)

    def audit_query(self, query: AuditQuery) -> tuple[str, list[object], str, list[object]]:
        """The count statement for ``query`` with its parameters, and the page's.

        Raise ``ValueError`` for a negative limit or offset.
        """
        if query.limit < 0 or query.offset < 0:
            raise ValueError("limit and offset must not be negative")
        # The WHERE clause is assembled from constant fragments only; every value is a
        # bound parameter. Each equality filter has an index.
        clauses: list[str] = []
        params: list[object] = []
        values = (
            query.agent_id,
            query.task_id,
            query.event_type,
            query.outcome,
            query.since,
            query.until,
        )
        for clause, value in zip(self._audit_filters, values, strict=True):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        count_sql = "SELECT COUNT(*) FROM audit_events" + where  # noqa: S608 (see above)
        page_sql = _SELECT_AUDIT + where + self._audit_page
        return count_sql, params, page_sql, [*params, query.limit, query.offset]

    # -- row conversions -----------------------------------------------------------------
    # Both drivers return text columns as str (on SQLite the tables are STRICT and the
    # columns NOT NULL), so only scope lists, numbers, booleans and blobs are converted.

    def app_from_row(self, row: Row) -> AppRecord:
        app_id, name, client_id, secret_hash, scopes, token_ttl, status, created, updated, by = row
        return AppRecord(
            app_id=app_id,
            name=name,
            client_id=client_id,
            secret_hash=secret_hash,
            scopes=self._load_scopes(scopes),
            token_ttl=int(token_ttl),
            status=status,
            created_at=float(created),
            updated_at=float(updated),
            created_by=by,
        )

    def app_params(self, app: AppRecord) -> tuple[object, ...]:
        return (
            app.app_id,
            app.name,
            app.client_id,
            app.secret_hash,
            self._dump_scopes(app.scopes),
            app.token_ttl,
            app.status,
            app.created_at,
            app.updated_at,
            app.created_by,
        )

    def launch_token_from_row(self, row: Row) -> LaunchTokenRecord:
        (token_hash, agent_name, scope, max_ttl, single_use, created, expires, by, app_id,
         used, audience, principal, max_uses, uses, allow_resume) = row  # fmt: skip
        return LaunchTokenRecord(
            token_hash=token_hash,
            agent_name=agent_name,
            allowed_scope=self._load_scopes(scope),
            max_ttl=int(max_ttl),
            single_use=bool(single_use),
            created_at=float(created),
            expires_at=float(expires),
            created_by=by,
            app_id=app_id,
            consumed_at=None if used is None else float(used),
            audience=self._load_scopes(audience),
            principal=principal,
            max_uses=int(max_uses),
            uses=int(uses),
            allow_resume=bool(allow_resume),
        )

    def launch_token_params(self, record: LaunchTokenRecord) -> tuple[object, ...]:
        return (
            record.token_hash,
            record.agent_name,
            self._dump_scopes(record.allowed_scope),
            record.max_ttl,
            record.single_use,
            record.created_at,
            record.expires_at,
            record.created_by,
            record.app_id,
            record.consumed_at,
            self._dump_scopes(record.audience),
            record.principal,
            record.max_uses,
            record.uses,
            record.allow_resume,
        )

    @staticmethod
    def operator_from_row(row: Row) -> OperatorRecord:
        name, role, secret_hash, public_key, status, created, updated, by = row
        return OperatorRecord(
            name=name,
            role=role,
            secret_hash=secret_hash,
            public_key=bytes(public_key),
            status=status,
            created_at=float(created),
            updated_at=float(updated),
            created_by=by,
        )

    @staticmethod
    def operator_params(operator: OperatorRecord) -> tuple[object, ...]:
        return (
            operator.name,
            operator.role,
            operator.secret_hash,
            operator.public_key,
            operator.status,
            operator.created_at,
            operator.updated_at,
            operator.created_by,
        )

    def agent_from_row(self, row: Row) -> AgentRecord:
        (agent_id, public_key, orch_id, task_id, scope, app_id, client_id, registered, status,
         cnf, audience, token_ttl, allow_resume) = row  # fmt: skip
        return AgentRecord(
            agent_id=agent_id,
            public_key=bytes(public_key),
            orch_id=orch_id,
            task_id=task_id,
            scope=self._load_scopes(scope),
            app_id=app_id,
            client_id=client_id,
            registered_at=float(registered),
            status=status,
            cnf=cnf,
            audience=self._load_scopes(audience),
            token_ttl=int(token_ttl),
            allow_resume=bool(allow_resume),
        )

    def agent_params(self, agent: AgentRecord) -> tuple[object, ...]:
        return (
            agent.agent_id,
            agent.public_key,
            agent.orch_id,
            agent.task_id,
            self._dump_scopes(agent.scope),
            agent.app_id,
            agent.client_id,
            agent.registered_at,
            agent.status,
            agent.cnf,
            self._dump_scopes(agent.audience),
            agent.token_ttl,
            agent.allow_resume,
        )


def session_from_row(row: Row) -> AgentSession:
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


def binding_from_row(row: Row) -> DiscoveryBinding:
    agent_id, endpoint, issued_at, signature, expires_at = row
    return DiscoveryBinding(
        agent_id=agent_id,
        endpoint=endpoint,
        issued_at=int(issued_at),
        signature=bytes(signature),
        expires_at=float(expires_at),
    )


def reference_from_row(row: Row) -> ReferenceTokenRecord:
    token_hash, kind, claims, jti, expires_at = row
    return ReferenceTokenRecord(
        token_hash=token_hash, kind=kind, claims=claims, jti=jti, expires_at=float(expires_at)
    )


def revocation_from_row(row: Row) -> RevocationRecord:
    seq, level, target, revoked_at, expires_at = row
    return RevocationRecord(
        level=level,
        target=target,
        revoked_at=int(revoked_at),
        expires_at=float(expires_at),
        seq=int(seq),
    )


def audit_rows(events: Sequence[AuditEvent], head_seq: int) -> list[tuple[object, ...]]:
    """The parameters of :attr:`Dialect.insert_audit` for each event.

    Raise ``Conflict`` unless every ``seq`` is greater than the one before it, starting
    from ``head_seq``.
    """
    rows: list[tuple[object, ...]] = []
    stamp: str | None = None  # events of one unit share a timestamp: parse it once
    seconds = 0.0
    for e in events:
        if e.seq <= head_seq:
            raise Conflict(f"audit seq {e.seq} is not after the head ({head_seq})")
        head_seq = e.seq
        if e.timestamp != stamp:
            stamp, seconds = e.timestamp, timestamp_seconds(e.timestamp)
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
    return rows
