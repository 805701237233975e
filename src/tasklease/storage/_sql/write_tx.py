"""The writes whose logic both SQL stores share: :class:`SQLWriteTx`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from tasklease.core.errors import Conflict, NotFound, Unavailable
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
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
    attestor_params,
    budget_from_row,
    grant_type_params,
    published_bundle_from_row,
    revocation_from_row,
    session_from_row,
    tenant_params,
)

__all__ = ["SQLWriteTx", "tree_from_row"]


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
        """Replace the active tenant named ``tenant.name``; raise ``NotFound`` if there is
        none (no such name, or removed: a removed tenant stays so)."""
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

    def get_app(self, app_id: str) -> AppRecord | None:
        """The app, locked until this transaction ends (PostgreSQL: a row lock; SQLite:
        the transaction holds the write lock)."""
        d = self.dialect
        row = self._db().execute(d.lock_app_row, (app_id,)).fetchone()
        return None if row is None else d.app_from_row(row)

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

    def get_operator(self, name: str) -> OperatorRecord | None:
        """The operator, locked until this transaction ends (PostgreSQL: a row lock;
        SQLite: the transaction holds the write lock)."""
        d = self.dialect
        row = self._db().execute(d.lock_operator, (name,)).fetchone()
        return None if row is None else d.operator_from_row(row)

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

    def find_revocation(self, level: str, target: str) -> RevocationRecord | None:
        row = self._db().execute(self.dialect.find_revocation, (level, target)).fetchone()
        return None if row is None else revocation_from_row(row)

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        found = (self.find_revocation(level, target) for level, target in keys)
        return [record for record in found if record is not None]

    def raise_resumes(self, agent_id: str, resumes: int) -> bool | None:
        db = self._db()
        if db.execute(self.dialect.raise_resumes, (resumes, agent_id, resumes)).rowcount == 1:
            return True
        return False if db.execute(self.dialect.has_session, (agent_id,)).fetchone() else None

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take the lease if free, expired or already ours: one upsert whose update only
        applies under that condition. On a conflict PostgreSQL locks the row and checks
        the condition on its latest committed version (SQLite: the transaction holds the
        write lock), so two replicas cannot both take it."""
        cursor = self._db().execute(self.dialect.acquire_lease, (name, holder, expires_at, now))
        return cursor.rowcount == 1

    def release_lease(self, name: str, holder: str) -> bool:
        cursor = self._db().execute(self.dialect.release_lease, (name, holder))
        return cursor.rowcount == 1

    def put_discovery_binding(self, binding: DiscoveryBinding) -> bool:
        cursor = self._db().execute(
            self.dialect.put_binding,
            (
                binding.agent_id,
                binding.endpoint,
                binding.issued_at,
                binding.signature,
                binding.expires_at,
            ),
        )
        return cursor.rowcount == 1

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

    def put_feed_heard(self, trust_domain: str, heard_at: float) -> None:
        self._db().execute(self.dialect.put_feed_heard, (trust_domain, heard_at))

    def put_retired_key(self, kid: str, retired_at: float) -> bool:
        return self._db().execute(self.dialect.put_retired_key, (kid, retired_at)).rowcount == 1

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

    def get_admin_credential(self) -> str | None:
        """The admin secret's hash on record, locked until this transaction ends."""
        row = self._db().execute(self.dialect.lock_admin_credential, ()).fetchone()
        return None if row is None else str(row[0])

    def put_admin_credential(self, secret_hash: str, changed_at: float) -> None:
        self._db().execute(self.dialect.put_admin_credential, (secret_hash, changed_at))

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

    def insert_grant_type(self, record: GrantTypeRecord) -> None:
        """Store a new grant type; raise ``Conflict`` if one of its name exists."""
        params = grant_type_params(record)
        if self._db().execute(self.dialect.insert_grant_type, params).rowcount != 1:
            raise Conflict(f"grant type {record.name} exists")

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

    # -- the audit log's lookups, filled behind it (migration 0018) ------------------------

    #: How many events the agent and task lookups may lag behind the log: a query reads at
    #: most this many of the log's own rows (plus one batch) for the events they lack.
    audit_index_every: ClassVar[int] = 4096

    def _index_audit(self, first_seq: int, last_seq: int) -> None:
        """After an append of ``first_seq..last_seq`` (the head: this transaction holds the
        lock), bring the agent and task lookups up to the head once they lag by
        :attr:`audit_index_every` events. In the append's transaction: both stay in step
        whatever happens to the process."""
        d = self.dialect
        conn = self._db()
        row = conn.execute(d.audit_indexed, ()).fetchone()
        indexed = 0 if row is None else int(row[0])
        if indexed >= first_seq:
            # The log was cut back by hand behind its lookups and grows again: they follow.
            indexed = first_seq - 1
            for statement in d.unindex_audit:
                conn.execute(statement, (indexed,))
            conn.execute(d.put_audit_indexed, (indexed,))
        if last_seq - indexed < self.audit_index_every:
            return
        for statement in d.index_audit:
            conn.execute(statement, (indexed,))
        conn.execute(d.put_audit_indexed, (last_seq,))

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
