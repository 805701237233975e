"""The operations whose logic both SQL stores share, on top of which each adds its own."""

from __future__ import annotations

import abc
import copy
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, Self, TypeVar

from tasklease.core.errors import Conflict, NotFound, Unavailable
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
    AuditEvent,
    AuditQuery,
    AuditTree,
    CallBudget,
    CheckpointRecord,
    DiscoveryBinding,
    FederationRecord,
    GrantTypeRecord,
    LaunchTokenRecord,
    OperatorRecord,
    PublishedBundle,
    ReferenceTokenRecord,
    RevocationRecord,
    TenantRecord,
    TileAppend,
)
from tasklease.storage._sql.dialect import (
    Dialect,
    Row,
    attestor_from_row,
    attestor_params,
    binding_from_row,
    budget_from_row,
    grant_type_from_row,
    grant_type_params,
    published_bundle_from_row,
    reference_from_row,
    revocation_from_row,
    session_from_row,
    tenant_from_row,
    tenant_params,
)
from tasklease.storage._sql.listings import ListingReads
from tasklease.storage._sql.schema import newer_error, older_error

__all__ = ["SQLStore", "SQLWriteTx", "SharedState"]


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any], /) -> _Cursor: ...


_C = TypeVar("_C", bound=_Connection)


class SQLWriteTx(Generic[_C]):
    """The writes whose logic both dialects share; valid only inside the store's ``write()``.

    Uniqueness is left to the database (``ON CONFLICT DO NOTHING``, then a look at which
    key clashed): on PostgreSQL the insert waits for a concurrent insert of the same key
    to end, so two replicas cannot both create it; on SQLite the transaction holds the
    write lock, so nothing can slip in between. A subclass sets :attr:`dialect` and adds
    ``savepoint``, ``insert_revocation``, ``audit_head`` and ``append_audit``. Every
    statement comes from ``dialect``, which names the one tenant the transaction writes.
    """

    def __init__(self, conn: _C, dialect: Dialect) -> None:
        self.dialect = dialect
        self._conn = conn
        self._open = True
        # Set when the transaction itself was lost (the connection died, the database
        # rolled it back on a full disk): from then on every statement and the commit
        # raise it, so nothing can run outside the transaction the caller believes in.
        self._lost: Unavailable | None = None

    def _db(self) -> _C:
        if not self._open:
            raise RuntimeError("this write transaction has ended")
        if self._lost is not None:
            raise _again(self._lost)
        return self._conn

    def _end(self) -> None:
        self._open = False

    def _lose(self, error: Unavailable) -> Unavailable:
        """Mark the transaction lost with ``error`` (raised by every later use); return it."""
        if self._lost is None:
            self._lost = error
        return _again(self._lost)

    @property
    def lost(self) -> Unavailable | None:
        """Why the transaction was lost, or None; the store's ``write()`` then rolls back
        and raises it instead of committing."""
        return self._lost

    def _exists(self, sql: str, params: Row) -> bool:
        return self._db().execute(sql, params).fetchone() is not None

    def _update_app_row(self, params: Row) -> None:
        """Run :attr:`Dialect.update_app`; PostgreSQL maps a unique violation to Conflict."""
        self._db().execute(self.dialect.update_app, params)

    def _delete_expired(self, now: float) -> int:
        """Delete the rows that ``prune`` removes; return how many."""
        conn = self._db()
        removed = 0
        for statement in self.dialect.prune:
            removed += conn.execute(statement, (now,)).rowcount
        return removed

    def _raise_safe_horizon(self, horizon: float) -> float:
        """Record ``horizon`` unless a greater one is; return the greater."""
        conn = self._db()
        conn.execute(self.dialect.raise_safe_horizon, (horizon,))
        row = conn.execute(self.dialect.safe_horizon, ()).fetchone()
        return float(row[0]) if row is not None else horizon

    # -- the tenant registry ---------------------------------------------------------------

    def insert_tenant(self, tenant: TenantRecord) -> None:
        """Record a new tenant; raise ``Conflict`` if its name or trust domain is taken."""
        d = self.dialect
        if self._db().execute(d.insert_tenant, tenant_params(tenant)).rowcount == 1:
            return
        if self._exists(d.tenant_name_taken, (tenant.name,)):
            raise Conflict("tenant name already exists")
        raise Conflict("tenant trust domain already exists")

    def update_tenant(self, tenant: TenantRecord) -> None:
        """Replace the tenant named ``tenant.name``; raise ``NotFound`` if there is none."""
        params = (*tenant_params(tenant)[1:], tenant.name)
        if self._db().execute(self.dialect.update_tenant, params).rowcount != 1:
            raise NotFound("tenant not found")

    # -- apps ----------------------------------------------------------------------------

    def insert_app(self, app: AppRecord) -> None:
        """Store a new app; raise ``Conflict`` if its app_id, name or client_id is taken."""
        d = self.dialect
        if self._db().execute(d.insert_app, d.app_params(app)).rowcount == 1:
            return
        if self._exists(d.app_id_taken, (app.app_id,)):
            raise Conflict("app id already exists")
        if self._exists(d.app_name_taken, (app.name,)):
            raise Conflict("app name already exists")
        raise Conflict("app client_id already exists")

    def update_app(self, app: AppRecord) -> None:
        """Replace the app with ``app.app_id``.

        Raise ``NotFound`` if there is none and ``Conflict`` if the new name or client_id
        belongs to another app (checked first for the message; on PostgreSQL the unique
        constraints decide when two replicas race).
        """
        d = self.dialect
        if not self._exists(d.lock_app, (app.app_id,)):
            raise NotFound("app not found")
        if self._exists(d.other_app_named, (app.name, app.app_id)):
            raise Conflict("app name already exists")
        if self._exists(d.other_app_client_id, (app.client_id, app.app_id)):
            raise Conflict("app client_id already exists")
        self._update_app_row((*d.app_params(app)[1:], app.app_id))

    # -- operators -----------------------------------------------------------------------

    def insert_operator(self, operator: OperatorRecord) -> None:
        """Store a new operator; raise ``Conflict`` if the name is taken."""
        d = self.dialect
        if self._db().execute(d.insert_operator, d.operator_params(operator)).rowcount != 1:
            raise Conflict("operator name already exists")

    def update_operator(self, operator: OperatorRecord) -> None:
        """Replace the operator named ``operator.name``; raise ``NotFound`` if there is none."""
        d = self.dialect
        params = (*d.operator_params(operator)[1:], operator.name)
        if self._db().execute(d.update_operator, params).rowcount != 1:
            raise NotFound("operator not found")

    # -- launch tokens and nonces --------------------------------------------------------

    def insert_launch_token(self, record: LaunchTokenRecord) -> None:
        """Store a launch token; raise ``Conflict`` if its hash is already present."""
        d = self.dialect
        if self._db().execute(d.insert_launch_token, d.launch_token_params(record)).rowcount != 1:
            raise Conflict("launch token already exists")

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        # One conditional UPDATE: the check and the count cannot be separated. A concurrent
        # consumer (PostgreSQL) waits for our row lock, then re-checks ``uses < max_uses``
        # on the committed row, so no more than ``max_uses`` registrations ever win.
        params = (now, token_hash, now)
        return self._db().execute(self.dialect.consume_launch_token, params).rowcount == 1

    def consume_nonce(self, nonce_hash: str, expires_at: float) -> bool:
        cursor = self._db().execute(self.dialect.consume_nonce, (nonce_hash, expires_at))
        return cursor.rowcount == 1

    def consume_dpop_proof(self, proof_hash: str, expires_at: float) -> bool:
        cursor = self._db().execute(self.dialect.consume_dpop_proof, (proof_hash, expires_at))
        return cursor.rowcount == 1

    # -- agents --------------------------------------------------------------------------

    def insert_agent(self, agent: AgentRecord) -> None:
        """Store a new agent; raise ``Conflict`` if its agent_id is already present."""
        d = self.dialect
        if self._db().execute(d.insert_agent, d.agent_params(agent)).rowcount != 1:
            raise Conflict("agent already exists")

    def set_agent_status(self, agent_id: str, status: str) -> None:
        """Set an agent's status; an unknown agent_id is not an error (nothing to mark).

        Revocation is idempotent and needs no existence check: the core revokes agent
        IDs this store may never have seen (another replica's, a federated domain's).
        """
        self._db().execute(self.dialect.set_agent_status, (status, agent_id))

    # -- by-reference tokens, agent sessions, leases, discovery --------------------------

    def insert_reference_token(self, record: ReferenceTokenRecord) -> None:
        """Store a by-reference token; raise ``Conflict`` if its hash is already present."""
        params = (record.token_hash, record.kind, record.claims, record.jti, record.expires_at)
        if self._db().execute(self.dialect.insert_reference, params).rowcount != 1:
            raise Conflict("reference token already exists")

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        """The session, locked until this transaction ends, so that a read-modify-write
        of it cannot interleave with another's (PostgreSQL: a row lock; SQLite: the
        transaction holds the database write lock)."""
        row = self._db().execute(self.dialect.lock_session, (agent_id,)).fetchone()
        return None if row is None else session_from_row(row)

    def put_agent_session(self, session: AgentSession) -> None:
        self._db().execute(
            self.dialect.put_session,
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
        """Take the lease if free, expired or already ours: one upsert whose update only
        applies under that condition. On a conflict PostgreSQL locks the row and checks
        the condition on its latest committed version (SQLite: the transaction holds the
        write lock), so two replicas cannot both take it."""
        cursor = self._db().execute(self.dialect.acquire_lease, (name, holder, expires_at, now))
        return cursor.rowcount == 1

    def put_discovery_binding(self, binding: DiscoveryBinding) -> None:
        self._db().execute(
            self.dialect.put_binding,
            (
                binding.agent_id,
                binding.endpoint,
                binding.issued_at,
                binding.signature,
                binding.expires_at,
            ),
        )

    # -- federation ----------------------------------------------------------------------

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        """The federated domain, locked until this transaction ends (PostgreSQL: a row
        lock; SQLite: the transaction holds the write lock)."""
        d = self.dialect
        row = self._db().execute(d.lock_federation, (trust_domain,)).fetchone()
        return None if row is None else d.federation_from_row(row)

    def put_federation(self, record: FederationRecord) -> None:
        d = self.dialect
        self._db().execute(d.put_federation, d.federation_params(record))

    def delete_federation(self, trust_domain: str) -> bool:
        cursor = self._db().execute(self.dialect.delete_federation, (trust_domain,))
        return cursor.rowcount == 1

    def get_published_bundle(self) -> PublishedBundle | None:
        """This tenant's published bundle, locked until this transaction ends."""
        row = self._db().execute(self.dialect.lock_published_bundle, ()).fetchone()
        return None if row is None else published_bundle_from_row(row)

    def put_published_bundle(self, bundle: PublishedBundle) -> None:
        params = (bundle.sequence, bundle.kids, bundle.bundle, bundle.updated_at)
        self._db().execute(self.dialect.put_published_bundle, params)

    # -- attestation (migration 0013) ------------------------------------------------------

    def put_attestor(self, record: AttestorRecord) -> None:
        self._db().execute(self.dialect.put_attestor, attestor_params(record))

    def delete_attestor(self, name: str) -> bool:
        return self._db().execute(self.dialect.delete_attestor, (name,)).rowcount == 1

    def consume_evidence(self, evidence_key: str, expires_at: float) -> bool:
        params = (evidence_key, expires_at)
        return self._db().execute(self.dialect.consume_evidence, params).rowcount == 1

    def consume_offline_report(self, report_key: str, expires_at: float) -> bool:
        params = (report_key, expires_at)
        return self._db().execute(self.dialect.consume_offline_report, params).rowcount == 1

    # -- grant types and call budgets (migration 0015) -----------------------------------

    def put_grant_type(self, record: GrantTypeRecord) -> None:
        self._db().execute(self.dialect.put_grant_type, grant_type_params(record))

    def delete_grant_type(self, name: str) -> bool:
        return self._db().execute(self.dialect.delete_grant_type, (name,)).rowcount == 1

    def put_call_budget(self, budget: CallBudget) -> None:
        params = (budget.key, budget.parent, budget.max_calls, budget.calls, budget.expires_at)
        self._db().execute(self.dialect.put_call_budget, params)

    def get_call_budget(self, key: str) -> CallBudget | None:
        row = self._db().execute(self.dialect.lock_call_budget, (key,)).fetchone()
        return None if row is None else budget_from_row(row)

    def count_call(self, key: str) -> str:
        """Every budget from ``key`` up, read locked (PostgreSQL: row locks; SQLite: the
        transaction's write lock), then each counted: all or none."""
        path: list[str] = []
        while key and len(path) <= 64:
            budget = self.get_call_budget(key)
            if budget is None or budget.calls >= budget.max_calls:
                return key
            path.append(key)
            key = budget.parent
        if key:
            return key
        conn = self._db()
        for found in path:
            if conn.execute(self.dialect.count_call, (found,)).rowcount != 1:
                raise Conflict(f"call budget {found} changed under its lock")
        return ""

    # -- the audit log's Merkle tree and checkpoints ---------------------------------------

    def audit_tree(self) -> AuditTree | None:
        """The tenant's tree as this transaction sees it (after ``audit_head``: locked)."""
        row = self._db().execute(self.dialect.audit_tree, ()).fetchone()
        return None if row is None else tree_from_row(row)

    def audit_hashes(self, after_seq: int, limit: int) -> list[str]:
        rows = self._db().execute(self.dialect.audit_hashes, (after_seq, limit)).fetchall()
        return [str(row[0]) for row in rows]

    def append_audit_tree(self, tree: AuditTree, tiles: Sequence[TileAppend]) -> None:
        """Append to the tiles and record ``tree``. A new tile is inserted, a growing one
        extended only if it holds exactly ``offset`` hashes: else ``Conflict``."""
        d = self.dialect
        conn = self._db()
        for tile in tiles:
            if tile.offset == 0:
                cursor = conn.execute(d.insert_tile, (tile.level, tile.index, tile.hashes))
            else:
                params = (tile.hashes, tile.level, tile.index, tile.offset * 32)
                cursor = conn.execute(d.extend_tile, params)
            if cursor.rowcount != 1:
                raise Conflict(
                    f"audit tile ({tile.level}, {tile.index}) does not hold {tile.offset} hashes"
                )
        conn.execute(d.put_audit_tree, (tree.size, tree.root, b"".join(tree.edge)))

    def put_checkpoint(self, record: CheckpointRecord) -> bool:
        params = (record.kind, record.size, record.note, record.created_at)
        return self._db().execute(self.dialect.put_checkpoint, params).rowcount == 1


def tree_from_row(row: Row) -> AuditTree:
    size, root, edge = int(row[0]), bytes(row[1]), bytes(row[2])
    return AuditTree(size, root, tuple(edge[i : i + 32] for i in range(0, len(edge), 32)))


def _again(error: Unavailable) -> Unavailable:
    """A fresh exception saying what ``error`` says (one instance is raised only once)."""
    return Unavailable(error.detail, reason=error.reason, retry_after=error.retry_after)


# -- what the stores share ---------------------------------------------------------------


class SharedState:
    """What a store and its tenant views (:meth:`SQLStore.for_tenant`) change together."""

    def __init__(self) -> None:
        self.closed = False
        self.write_owner: int | None = None  # the thread inside write(), if any
        self.full_at: int | None = None  # free bytes when a commit last found the disk full
        self.connect_errors = 0  # PostgreSQL: the pool's failed connection attempts, last seen


class SQLStore(ListingReads, abc.ABC):
    """The reads (and ``prune``) whose logic both dialects share.

    A subclass sets :attr:`dialect` (the default tenant's), creates ``_shared`` first thing
    in its constructor and provides ``write``, ``close``, ``schema_version`` and three ways
    to run a read: :meth:`_one`, :meth:`_all` and :meth:`_count_and_page`.

    A store reads and writes the default tenant's rows; :meth:`for_tenant` gives a view
    of another tenant's that shares the connections, locks and state.
    """

    dialect: Dialect
    _shared: SharedState

    def for_tenant(self, tenant: str) -> Self:
        """This store limited to ``tenant``'s rows (every statement names it).

        The view shares everything else with this store: closing either closes both.
        Raise ``ValueError`` if ``tenant`` is not a valid tenant id.
        """
        view = copy.copy(self)
        view.dialect = self.dialect.for_tenant(tenant)
        return view

    @property
    def tenant(self) -> str:
        """The tenant whose rows this store reads and writes."""
        return self.dialect.tenant

    # The state the views share, under the names the stores use.
    @property
    def _closed(self) -> bool:
        return self._shared.closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self._shared.closed = value

    @property
    def _write_owner(self) -> int | None:
        return self._shared.write_owner

    @_write_owner.setter
    def _write_owner(self, value: int | None) -> None:
        self._shared.write_owner = value

    @property
    def _full_at(self) -> int | None:
        return self._shared.full_at

    @_full_at.setter
    def _full_at(self, value: int | None) -> None:
        self._shared.full_at = value

    @property
    def _connect_errors(self) -> int:
        return self._shared.connect_errors

    @_connect_errors.setter
    def _connect_errors(self, value: int) -> None:
        self._shared.connect_errors = value

    @abc.abstractmethod
    def write(self) -> AbstractContextManager[SQLWriteTx[Any]]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version recorded in the database (0 before the first migration)."""

    @abc.abstractmethod
    def _one(self, sql: str, params: Row) -> Row | None:
        """The first row of a read, or None."""

    @abc.abstractmethod
    def _all(self, sql: str, params: Row = ()) -> list[Row]:
        """Every row of a read."""

    @abc.abstractmethod
    def _count_and_page(
        self, count_sql: str, count_params: list[object], page_sql: str, page_params: list[object]
    ) -> tuple[int, list[Row]]:
        """The count of one read and the rows of another, both from one snapshot."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------

    @classmethod
    def known_schema_version(cls) -> int:
        """The newest schema version this code knows."""
        return len(cls.dialect.migrations())

    def _check_schema(self) -> None:
        known = self.known_schema_version()
        current = self.schema_version()
        if current > known:
            raise newer_error(current, known)
        if current < known:
            raise older_error(current, known)

    # -- writes --------------------------------------------------------------------------

    def prune(self, now: float) -> int:
        """Delete revocations, used nonces, launch tokens, by-reference tokens, agent
        sessions, discovery bindings and leases with ``expires_at <= now``.

        Return the number of rows removed. Audit events are never touched.
        """
        with self.write() as tx:
            return tx._delete_expired(now)

    def raise_safe_horizon(self, horizon: float) -> float:
        """Record ``horizon`` unless a greater one is recorded; return the greater."""
        with self.write() as tx:
            return tx._raise_safe_horizon(horizon)

    def safe_horizon(self) -> float | None:
        row = self._one(self.dialect.safe_horizon, ())
        return None if row is None else float(row[0])

    # -- reads ---------------------------------------------------------------------------

    def get_tenant(self, name: str) -> TenantRecord | None:
        row = self._one(self.dialect.get_tenant, (name,))
        return None if row is None else tenant_from_row(row)

    def list_tenants(self) -> list[TenantRecord]:
        return [tenant_from_row(row) for row in self._all(self.dialect.list_tenants)]

    def get_app(self, app_id: str) -> AppRecord | None:
        row = self._one(self.dialect.get_app, (app_id,))
        return None if row is None else self.dialect.app_from_row(row)

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None:
        row = self._one(self.dialect.get_app_by_client_id, (client_id,))
        return None if row is None else self.dialect.app_from_row(row)

    def list_apps(self) -> list[AppRecord]:
        """Newest first (by ``created_at``, ties by ``app_id`` descending)."""
        app_from_row = self.dialect.app_from_row
        return [app_from_row(row) for row in self._all(self.dialect.list_apps)]

    def get_operator(self, name: str) -> OperatorRecord | None:
        row = self._one(self.dialect.get_operator, (name,))
        return None if row is None else self.dialect.operator_from_row(row)

    def list_operators(self) -> list[OperatorRecord]:
        """Every operator, removed ones too, by name."""
        operator_from_row = self.dialect.operator_from_row
        return [operator_from_row(row) for row in self._all(self.dialect.list_operators)]

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None:
        row = self._one(self.dialect.get_launch_token, (token_hash,))
        return None if row is None else self.dialect.launch_token_from_row(row)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        row = self._one(self.dialect.get_agent, (agent_id,))
        return None if row is None else self.dialect.agent_from_row(row)

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        rows = self._all(self.dialect.load_revocations, (now,))
        return [revocation_from_row(row) for row in rows]

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        rows = self._all(self.dialect.revocations_since, (seq,))
        return [revocation_from_row(row) for row in rows]

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        row = self._one(self.dialect.get_session, (agent_id,))
        return None if row is None else session_from_row(row)

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        rows = self._all(self.dialect.silent_agents, (before, limit))
        return [session_from_row(row) for row in rows]

    def get_discovery_binding(self, agent_id: str) -> DiscoveryBinding | None:
        row = self._one(self.dialect.get_binding, (agent_id,))
        return None if row is None else binding_from_row(row)

    def get_reference_token(self, token_hash: str) -> ReferenceTokenRecord | None:
        row = self._one(self.dialect.get_reference, (token_hash,))
        return None if row is None else reference_from_row(row)

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        row = self._one(self.dialect.get_federation, (trust_domain,))
        return None if row is None else self.dialect.federation_from_row(row)

    def list_federations(self) -> list[FederationRecord]:
        """Every federated domain, by name."""
        federation_from_row = self.dialect.federation_from_row
        return [federation_from_row(row) for row in self._all(self.dialect.list_federations)]

    def get_published_bundle(self) -> PublishedBundle | None:
        row = self._one(self.dialect.get_published_bundle, ())
        return None if row is None else published_bundle_from_row(row)

    def get_attestor(self, name: str) -> AttestorRecord | None:
        row = self._one(self.dialect.get_attestor, (name,))
        return None if row is None else attestor_from_row(row)

    def get_grant_type(self, name: str) -> GrantTypeRecord | None:
        row = self._one(self.dialect.get_grant_type, (name,))
        return None if row is None else grant_type_from_row(row)

    def list_grant_types(self) -> list[GrantTypeRecord]:
        return [grant_type_from_row(row) for row in self._all(self.dialect.list_grant_types)]

    def list_attestors(self) -> list[AttestorRecord]:
        return [attestor_from_row(row) for row in self._all(self.dialect.list_attestors)]

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Events matching every given filter, in seq order after offset/limit, and the count.

        Raise ``ValueError`` for a negative limit or offset.
        """
        count_sql, count_params, page_sql, page_params = self.dialect.audit_query(query)
        total, rows = self._count_and_page(count_sql, count_params, page_sql, page_params)
        # The audit columns are selected in AuditEvent's field order and their types map
        # to exactly the field types (STRICT tables on SQLite): no per-column conversion.
        return [AuditEvent(*row) for row in rows], total

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in seq order.

        Keyset pagination (``seq > last``, never OFFSET): each batch is one index range
        read, however deep the walk. Nothing stays open between batches, so a slow
        consumer holds no connection and pins no snapshot (on SQLite that would stop WAL
        checkpoints).
        """
        if batch <= 0:
            raise ValueError("batch must be positive")
        sql = self.dialect.audit_after
        cursor = after_seq
        while True:
            rows = self._all(sql, (cursor, batch))
            for row in rows:
                yield AuditEvent(*row)
            if len(rows) < batch:
                return
            cursor = int(rows[-1][0])

    def audit_tree(self) -> AuditTree | None:
        row = self._one(self.dialect.audit_tree, ())
        return None if row is None else tree_from_row(row)

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The tiles among ``keys`` that exist, from one statement."""
        if not keys:
            return {}
        params = tuple(value for key in keys for value in key)
        rows = self._all(self.dialect.audit_tiles(len(keys)), params)
        return {(int(level), int(index)): bytes(hashes) for level, index, hashes in rows}

    def get_checkpoint(self, kind: str) -> CheckpointRecord | None:
        row = self._one(self.dialect.get_checkpoint, (kind,))
        if row is None:
            return None
        return CheckpointRecord(str(row[0]), int(row[1]), str(row[2]), float(row[3]))
