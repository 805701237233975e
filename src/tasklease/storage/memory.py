"""An in-process store: dicts under one lock. For tests and single-process experiments.

It follows the same contracts as the durable stores (the conformance suite in
``tests/storage`` runs against all of them) but keeps nothing across a restart.

Concurrency: one :class:`threading.RLock` guards every dict. :meth:`MemoryStore.write`
holds it for the whole transaction, so a transaction is serializable and readers in other
threads only ever see committed state. Rollback and savepoints replay an undo log.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

from tasklease.core.errors import Conflict, NotFound
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
    ListQuery,
    OperatorRecord,
    PublishedBundle,
    ReferenceTokenRecord,
    RevocationRecord,
    TenantRecord,
    TileAppend,
)
from tasklease.core.tenants import DEFAULT_TENANT, check_tenant_id

__all__ = ["MemoryStore"]

_GENESIS_HASH = "0" * 64

_V = TypeVar("_V")


def _page_limit(query: ListQuery) -> int:
    """A listing's page size: positive, at most 1000 (as the SQL stores)."""
    if query.limit <= 0:
        raise ValueError("limit must be positive")
    return min(query.limit, 1000)


def _timestamp_seconds(timestamp: str) -> float:
    """Unix seconds of an RFC 3339 timestamp; it must carry an offset (``Z`` or ``±hh:mm``).

    The SQLite store has the same function: keep the two in step.
    """
    parsed = datetime.fromisoformat(timestamp)
    if parsed.tzinfo is None:
        raise ValueError(f"audit timestamp {timestamp!r} has no UTC offset")
    return parsed.timestamp()


class _Shared:
    """What a memory store and its tenant views share: the lock, the writer, the
    tenant registry and the views themselves."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.writer: int | None = None  # thread id inside write(), to refuse nesting
        self.closed = False
        self.safe_horizon: float | None = None
        self.tenants: dict[str, TenantRecord] = {}
        self.views: dict[str, MemoryStore] = {}


class _MemoryWriteTx:
    """One transaction over a :class:`MemoryStore`; valid only inside ``write()``."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._undo: list[Callable[[], None]] = []
        self._open = True

    # -- transaction machinery -------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("this write transaction has ended")

    def _rollback_to(self, mark: int) -> None:
        while len(self._undo) > mark:
            self._undo.pop()()

    def _finish(self, *, commit: bool) -> None:
        if not commit:
            self._rollback_to(0)
        self._undo.clear()
        self._open = False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo this block's writes if it raises (and re-raise); the transaction goes on."""
        self._check_open()
        mark = len(self._undo)
        try:
            yield
        except BaseException:
            self._rollback_to(mark)
            raise

    def _set(self, table: dict[str, _V], key: str, value: _V) -> None:
        if key in table:
            old = table[key]
            self._undo.append(lambda: table.__setitem__(key, old))
        else:
            self._undo.append(lambda: table.__delitem__(key))
        table[key] = value

    # -- the tenant registry ---------------------------------------------------------------

    def insert_tenant(self, tenant: TenantRecord) -> None:
        """Record a new tenant; raise ``Conflict`` if its name or trust domain is taken."""
        self._check_open()
        tenants = self._store._shared.tenants
        if tenant.name in tenants:
            raise Conflict("tenant name already exists")
        if any(t.trust_domain == tenant.trust_domain for t in tenants.values()):
            raise Conflict("tenant trust domain already exists")
        self._set(tenants, tenant.name, tenant)

    def update_tenant(self, tenant: TenantRecord) -> None:
        """Replace the tenant named ``tenant.name``; raise ``NotFound`` if there is none."""
        self._check_open()
        tenants = self._store._shared.tenants
        if tenant.name not in tenants:
            raise NotFound("tenant not found")
        self._set(tenants, tenant.name, tenant)

    # -- apps ----------------------------------------------------------------------------

    def insert_app(self, app: AppRecord) -> None:
        """Store a new app; raise ``Conflict`` if its app_id, name or client_id is taken."""
        self._check_open()
        s = self._store
        if app.app_id in s._apps:
            raise Conflict("app id already exists")
        if any(a.name == app.name for a in s._apps.values()):
            raise Conflict("app name already exists")
        if any(a.client_id == app.client_id for a in s._apps.values()):
            raise Conflict("app client_id already exists")
        self._set(s._apps, app.app_id, app)

    def update_app(self, app: AppRecord) -> None:
        """Replace the app with ``app.app_id``.

        Raise ``NotFound`` if there is none and ``Conflict`` if the new name or client_id
        belongs to another app.
        """
        self._check_open()
        s = self._store
        if app.app_id not in s._apps:
            raise NotFound("app not found")
        others = [a for a in s._apps.values() if a.app_id != app.app_id]
        if any(a.name == app.name for a in others):
            raise Conflict("app name already exists")
        if any(a.client_id == app.client_id for a in others):
            raise Conflict("app client_id already exists")
        self._set(s._apps, app.app_id, app)

    # -- operators -----------------------------------------------------------------------

    def insert_operator(self, operator: OperatorRecord) -> None:
        """Store a new operator; raise ``Conflict`` if the name is taken."""
        self._check_open()
        operators = self._store._operators
        if operator.name in operators:
            raise Conflict("operator name already exists")
        self._set(operators, operator.name, operator)

    def update_operator(self, operator: OperatorRecord) -> None:
        """Replace the operator named ``operator.name``; raise ``NotFound`` if there is none."""
        self._check_open()
        operators = self._store._operators
        if operator.name not in operators:
            raise NotFound("operator not found")
        self._set(operators, operator.name, operator)

    # -- launch tokens and nonces --------------------------------------------------------

    def insert_launch_token(self, record: LaunchTokenRecord) -> None:
        """Store a launch token; raise ``Conflict`` if its hash is already present."""
        self._check_open()
        tokens = self._store._launch_tokens
        if record.token_hash in tokens:
            raise Conflict("launch token already exists")
        self._set(tokens, record.token_hash, record)

    def consume_launch_token(self, token_hash: str, now: float) -> bool:
        self._check_open()
        tokens = self._store._launch_tokens
        record = tokens.get(token_hash)
        if record is None or record.expires_at <= now or record.uses >= record.max_uses:
            return False
        uses = record.uses + 1
        used_up = now if uses >= record.max_uses else record.consumed_at
        self._set(tokens, token_hash, dataclasses.replace(record, uses=uses, consumed_at=used_up))
        return True

    def consume_nonce(self, nonce_hash: str, expires_at: float) -> bool:
        self._check_open()
        nonces = self._store._nonces
        if nonce_hash in nonces:
            return False
        self._set(nonces, nonce_hash, expires_at)
        return True

    def consume_dpop_proof(self, proof_hash: str, expires_at: float) -> bool:
        self._check_open()
        proofs = self._store._dpop_proofs
        if proof_hash in proofs:
            return False
        self._set(proofs, proof_hash, expires_at)
        return True

    # -- agents --------------------------------------------------------------------------

    def insert_agent(self, agent: AgentRecord) -> None:
        """Store a new agent; raise ``Conflict`` if its agent_id is already present."""
        self._check_open()
        agents = self._store._agents
        if agent.agent_id in agents:
            raise Conflict("agent already exists")
        self._set(agents, agent.agent_id, agent)

    def set_agent_status(self, agent_id: str, status: str) -> None:
        """Set an agent's status; an unknown agent_id is not an error (nothing to mark).

        Revocation is idempotent and needs no existence check: the core revokes agent
        IDs this store may never have seen (another replica's, a federated domain's).
        """
        self._check_open()
        agents = self._store._agents
        agent = agents.get(agent_id)
        if agent is None:
            return
        self._set(agents, agent_id, dataclasses.replace(agent, status=status))

    # -- revocations ---------------------------------------------------------------------

    def _next_revocation_seq(self) -> int:
        s = self._store
        previous = s._revocation_seq
        s._revocation_seq = previous + 1

        def undo() -> None:
            s._revocation_seq = previous

        self._undo.append(undo)
        return previous + 1

    def insert_revocation(self, record: RevocationRecord) -> bool:
        """Store a revocation with a fresh ``seq``; ``record.seq`` is ignored.

        Return False if (level, target) is already present. If the new ``revoked_at`` or
        ``expires_at`` is later, the entry takes the later of each and a new ``seq``
        greater than every seq handed out before, so pollers of ``revocations_since``
        see the change.
        """
        self._check_open()
        revocations = self._store._revocations
        key = f"{record.level}\x00{record.target}"
        existing = revocations.get(key)
        if existing is None:
            seq = self._next_revocation_seq()
            self._set(revocations, key, dataclasses.replace(record, seq=seq))
            return True
        revoked_at = max(existing.revoked_at, record.revoked_at)
        expires_at = max(existing.expires_at, record.expires_at)
        if (revoked_at, expires_at) != (existing.revoked_at, existing.expires_at):
            extended = RevocationRecord(
                level=existing.level,
                target=existing.target,
                revoked_at=revoked_at,
                expires_at=expires_at,
                seq=self._next_revocation_seq(),
            )
            self._set(revocations, key, extended)
        return False

    # -- agent sessions, leases, discovery ------------------------------------

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        self._check_open()
        return self._store._sessions.get(agent_id)

    def put_agent_session(self, session: AgentSession) -> None:
        self._check_open()
        self._set(self._store._sessions, session.agent_id, session)

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        self._check_open()
        leases = self._store._leases
        current = leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._set(leases, name, (holder, expires_at))
        return True

    def put_discovery_binding(self, binding: DiscoveryBinding) -> None:
        self._check_open()
        self._set(self._store._bindings, binding.agent_id, binding)

    # -- federation ------------------------------------------------------------------------

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        self._check_open()
        return self._store._federations.get(trust_domain)

    def put_federation(self, record: FederationRecord) -> None:
        self._check_open()
        self._set(self._store._federations, record.trust_domain, record)

    def delete_federation(self, trust_domain: str) -> bool:
        self._check_open()
        table = self._store._federations
        if trust_domain not in table:
            return False
        old = table.pop(trust_domain)
        self._undo.append(lambda: table.__setitem__(trust_domain, old))
        return True

    def get_published_bundle(self) -> PublishedBundle | None:
        self._check_open()
        return self._store._published.get("")

    # -- attestation (migration 0013) ---------------------------------------------------

    def put_attestor(self, record: AttestorRecord) -> None:
        self._check_open()
        self._set(self._store._attestors, record.name, record)

    def delete_attestor(self, name: str) -> bool:
        self._check_open()
        table = self._store._attestors
        if name not in table:
            return False
        old = table.pop(name)
        self._undo.append(lambda: table.__setitem__(name, old))
        return True

    def consume_evidence(self, evidence_key: str, expires_at: float) -> bool:
        self._check_open()
        used = self._store._evidence
        if evidence_key in used:
            return False
        self._set(used, evidence_key, expires_at)
        return True

    def consume_offline_report(self, report_key: str, expires_at: float) -> bool:
        self._check_open()
        reported = self._store._offline_reports
        if report_key in reported:
            return False
        self._set(reported, report_key, expires_at)
        return True

    def put_published_bundle(self, bundle: PublishedBundle) -> None:
        self._check_open()
        self._set(self._store._published, "", bundle)

    # -- grant types and call budgets (migration 0015) ----------------------------------

    def put_grant_type(self, record: GrantTypeRecord) -> None:
        self._check_open()
        self._set(self._store._grant_types, record.name, record)

    def delete_grant_type(self, name: str) -> bool:
        self._check_open()
        table = self._store._grant_types
        if name not in table:
            return False
        old = table.pop(name)
        self._undo.append(lambda: table.__setitem__(name, old))
        return True

    def put_call_budget(self, budget: CallBudget) -> None:
        self._check_open()
        if budget.key not in self._store._budgets:
            self._set(self._store._budgets, budget.key, budget)

    def count_call(self, key: str) -> str:
        self._check_open()
        budgets = self._store._budgets
        path: list[CallBudget] = []
        while key and len(path) <= 64:
            found = budgets.get(key)
            if found is None or found.calls >= found.max_calls:
                return key
            path.append(found)
            key = found.parent
        if key:
            return key
        for budget in path:
            self._set(budgets, budget.key, dataclasses.replace(budget, calls=budget.calls + 1))
        return ""

    def get_call_budget(self, key: str) -> CallBudget | None:
        self._check_open()
        return self._store._budgets.get(key)

    # -- by-reference tokens -------------------------------------------------------------

    def insert_reference_token(self, record: ReferenceTokenRecord) -> None:
        """Store a by-reference token; raise ``Conflict`` if its hash is already present."""
        self._check_open()
        tokens = self._store._reference_tokens
        if record.token_hash in tokens:
            raise Conflict("reference token already exists")
        self._set(tokens, record.token_hash, record)

    # -- audit ---------------------------------------------------------------------------

    def audit_head(self) -> tuple[int, str]:
        self._check_open()
        return self._store._audit_head_locked()

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events; each ``seq`` must be greater than the head's, else ``Conflict``."""
        self._check_open()
        s = self._store
        head_seq = s._audit_head_locked()[0]
        parsed: list[tuple[AuditEvent, float]] = []
        for event in events:
            if event.seq <= head_seq:
                raise Conflict(f"audit seq {event.seq} is not after the head ({head_seq})")
            head_seq = event.seq
            parsed.append((event, _timestamp_seconds(event.timestamp)))
        if not parsed:
            return
        mark = len(s._audit)
        s._audit.extend(parsed)
        s._audit_seqs.extend(event.seq for event, _ in parsed)

        def undo() -> None:
            del s._audit[mark:]
            del s._audit_seqs[mark:]

        self._undo.append(undo)

    def audit_tree(self) -> AuditTree | None:
        self._check_open()
        return self._store._tree

    def audit_hashes(self, after_seq: int, limit: int) -> list[str]:
        self._check_open()
        s = self._store
        start = bisect.bisect_right(s._audit_seqs, after_seq)
        return [event.hash for event, _ in s._audit[start : start + max(0, limit)]]

    def append_audit_tree(self, tree: AuditTree, tiles: Sequence[TileAppend]) -> None:
        """Append to the tiles and record ``tree``; ``Conflict`` if a tile does not hold
        exactly ``offset`` hashes."""
        self._check_open()
        s = self._store
        for tile in tiles:
            key = (tile.level, tile.index)
            held = s._tiles.get(key, b"")
            if len(held) != tile.offset * 32:
                raise Conflict(f"audit tile {key} does not hold {tile.offset} hashes")
            s._tiles[key] = held + tile.hashes
            self._undo.append(functools.partial(_restore, s._tiles, key, held))
        previous = s._tree

        def undo() -> None:
            s._tree = previous

        s._tree = tree
        self._undo.append(undo)

    def put_checkpoint(self, record: CheckpointRecord) -> bool:
        self._check_open()
        checkpoints = self._store._checkpoints
        current = checkpoints.get(record.kind)
        if current is not None and current.size > record.size:
            return False
        self._set(checkpoints, record.kind, record)
        return True


def _restore(tiles: dict[tuple[int, int], bytes], key: tuple[int, int], held: bytes) -> None:
    if held:
        tiles[key] = held
    else:
        tiles.pop(key, None)


class MemoryStore:
    """:class:`tasklease.core.store.Store` in memory; state is lost when the process exits.

    Reads return committed state when called from another thread than the writer's; a
    read from inside ``write()`` on the writer's own thread sees that transaction's
    uncommitted writes (the durable stores would not: read through the transaction).
    """

    local_reads = True  # see Store.local_reads

    def __init__(self, *, _shared: _Shared | None = None, _tenant: str = DEFAULT_TENANT) -> None:
        # What the default tenant's store and every tenant view share (for_tenant).
        self._shared = shared = _Shared() if _shared is None else _shared
        self._tenant = check_tenant_id(_tenant)
        shared.views[_tenant] = self
        self._lock = shared.lock
        self._apps: dict[str, AppRecord] = {}
        self._operators: dict[str, OperatorRecord] = {}
        self._launch_tokens: dict[str, LaunchTokenRecord] = {}
        self._nonces: dict[str, float] = {}
        self._dpop_proofs: dict[str, float] = {}  # DPoP proof hash -> expires_at
        self._agents: dict[str, AgentRecord] = {}
        self._revocations: dict[str, RevocationRecord] = {}
        self._reference_tokens: dict[str, ReferenceTokenRecord] = {}
        self._sessions: dict[str, AgentSession] = {}
        self._bindings: dict[str, DiscoveryBinding] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._federations: dict[str, FederationRecord] = {}
        self._published: dict[str, PublishedBundle] = {}  # one entry, key ""
        self._attestors: dict[str, AttestorRecord] = {}
        self._evidence: dict[str, float] = {}  # used attestation evidence -> expires_at
        self._offline_reports: dict[str, float] = {}  # audited offline report -> expires_at
        self._grant_types: dict[str, GrantTypeRecord] = {}
        self._budgets: dict[str, CallBudget] = {}
        self._revocation_seq = 0
        # Audit events in seq order with their parsed timestamps, and the seqs alone
        # for bisect (append_audit refuses a seq that is not after the head).
        self._audit: list[tuple[AuditEvent, float]] = []
        self._audit_seqs: list[int] = []
        # The Merkle tree over them (core.audittree) and the latest checkpoints by kind.
        self._tree: AuditTree | None = None
        self._tiles: dict[tuple[int, int], bytes] = {}
        self._checkpoints: dict[str, CheckpointRecord] = {}

    # -- tenants -------------------------------------------------------------------------

    @property
    def tenant(self) -> str:
        """The tenant whose rows this store reads and writes."""
        return self._tenant

    def for_tenant(self, tenant: str) -> MemoryStore:
        """This store's data for ``tenant`` (a view kept for the store's life).

        Raise ``ValueError`` if ``tenant`` is not a valid tenant id.
        """
        with self._lock:
            view = self._shared.views.get(check_tenant_id(tenant))
            return view if view is not None else MemoryStore(_shared=self._shared, _tenant=tenant)

    def get_tenant(self, name: str) -> TenantRecord | None:
        with self._lock:
            self._check_open()
            return self._shared.tenants.get(name)

    def list_tenants(self) -> list[TenantRecord]:
        with self._lock:
            self._check_open()
            return [self._shared.tenants[name] for name in sorted(self._shared.tenants)]

    # The state the views share, under the names used below.
    @property
    def _writer(self) -> int | None:
        return self._shared.writer

    @_writer.setter
    def _writer(self, value: int | None) -> None:
        self._shared.writer = value

    @property
    def _closed(self) -> bool:
        return self._shared.closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self._shared.closed = value

    @property
    def _safe_horizon(self) -> float | None:
        return self._shared.safe_horizon

    @_safe_horizon.setter
    def _safe_horizon(self, value: float | None) -> None:
        self._shared.safe_horizon = value

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

    @contextmanager
    def write(self) -> Iterator[_MemoryWriteTx]:
        """One transaction: commit on a clean exit, roll back everything on an exception.

        Not reentrant: calling ``write()`` inside ``write()`` raises ``RuntimeError``.
        """
        with self._lock:
            self._check_open()
            if self._writer is not None:
                raise RuntimeError("write() is not reentrant: use the open transaction")
            self._writer = threading.get_ident()
            tx = _MemoryWriteTx(self)
            try:
                yield tx
            except BaseException:
                tx._finish(commit=False)
                raise
            else:
                tx._finish(commit=True)
            finally:
                self._writer = None

    # -- reads ---------------------------------------------------------------------------

    def get_app(self, app_id: str) -> AppRecord | None:
        with self._lock:
            self._check_open()
            return self._apps.get(app_id)

    def get_app_by_client_id(self, client_id: str) -> AppRecord | None:
        with self._lock:
            self._check_open()
            return next((a for a in self._apps.values() if a.client_id == client_id), None)

    def list_apps(self) -> list[AppRecord]:
        """Newest first (by ``created_at``, ties by ``app_id`` descending)."""
        with self._lock:
            self._check_open()
            return sorted(self._apps.values(), key=lambda a: (a.created_at, a.app_id), reverse=True)

    def get_operator(self, name: str) -> OperatorRecord | None:
        with self._lock:
            self._check_open()
            return self._operators.get(name)

    def list_operators(self) -> list[OperatorRecord]:
        """Every operator, removed ones too, by name."""
        with self._lock:
            self._check_open()
            return sorted(self._operators.values(), key=lambda o: o.name)

    def get_launch_token(self, token_hash: str) -> LaunchTokenRecord | None:
        with self._lock:
            self._check_open()
            return self._launch_tokens.get(token_hash)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        with self._lock:
            self._check_open()
            return self._agents.get(agent_id)

    def load_revocations(self, now: float) -> list[RevocationRecord]:
        with self._lock:
            self._check_open()
            live = (r for r in self._revocations.values() if r.expires_at > now)
            return sorted(live, key=lambda r: r.seq)

    def revocations_since(self, seq: int) -> list[RevocationRecord]:
        with self._lock:
            self._check_open()
            newer = (r for r in self._revocations.values() if r.seq > seq)
            return sorted(newer, key=lambda r: r.seq)

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        with self._lock:
            self._check_open()
            found = (self._revocations.get(f"{level}\x00{target}") for level, target in keys)
            return sorted({r.seq: r for r in found if r is not None}.values(), key=lambda r: r.seq)

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        with self._lock:
            self._check_open()
            return self._sessions.get(agent_id)

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        with self._lock:
            self._check_open()
            silent = [
                s
                for s in self._sessions.values()
                if s.heartbeat_required and s.state == "active" and s.last_heartbeat < before
            ]
        return sorted(silent, key=lambda s: (s.last_heartbeat, s.agent_id))[:limit]

    # -- the operators' listings (core.inventory): newest first, keyset-paged ------------

    def list_agents(self, query: ListQuery) -> list[tuple[AgentRecord, AgentSession | None]]:
        limit = _page_limit(query)
        with self._lock:
            self._check_open()
            rows = [(a, self._sessions.get(a.agent_id)) for a in self._agents.values()]
        found = [
            (agent, session)
            for agent, session in rows
            if (query.app_id is None or agent.app_id == query.app_id)
            and (query.task_id is None or agent.task_id == query.task_id)
            and (
                query.principal is None
                or (session is not None and session.principal == query.principal)
            )
            and (query.after is None or (agent.registered_at, agent.agent_id) < query.after)
        ]
        found.sort(key=lambda row: (row[0].registered_at, row[0].agent_id), reverse=True)
        return found[:limit]

    def list_launch_tokens(self, query: ListQuery, now: float) -> list[LaunchTokenRecord]:
        limit = _page_limit(query)
        with self._lock:
            self._check_open()
            records = list(self._launch_tokens.values())
        found = [
            r
            for r in records
            if r.uses < r.max_uses
            and r.expires_at > now
            and (query.app_id is None or r.app_id == query.app_id)
            and (query.principal is None or r.principal == query.principal)
            and (query.after is None or (r.created_at, r.token_hash) < query.after)
        ]
        found.sort(key=lambda r: (r.created_at, r.token_hash), reverse=True)
        return found[:limit]

    def list_revocations(self, query: ListQuery) -> list[RevocationRecord]:
        limit = _page_limit(query)
        with self._lock:
            self._check_open()
            records = list(self._revocations.values())
        found = [
            r
            for r in records
            if (query.level is None or r.level == query.level)
            and (query.after is None or r.seq < int(query.after[0]))
        ]
        found.sort(key=lambda r: r.seq, reverse=True)
        return found[:limit]

    def audit_mentioning(
        self, text: str, event_types: Sequence[str], limit: int
    ) -> list[AuditEvent]:
        if not text or not all(c.isalnum() or c in "=_" for c in text) or len(text) > 128:
            raise ValueError("text must be letters, digits, = and _")
        types = set(event_types)
        with self._lock:
            self._check_open()
            found = [
                event
                for event, _ in self._audit
                if (not types or event.event_type in types) and text in event.detail
            ]
        return found[: max(1, min(limit, 1000))]

    def get_discovery_binding(self, agent_id: str) -> DiscoveryBinding | None:
        with self._lock:
            self._check_open()
            return self._bindings.get(agent_id)

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        with self._lock:
            self._check_open()
            return self._federations.get(trust_domain)

    def list_federations(self) -> list[FederationRecord]:
        """Every federated domain, by name."""
        with self._lock:
            self._check_open()
            return [self._federations[name] for name in sorted(self._federations)]

    def get_published_bundle(self) -> PublishedBundle | None:
        with self._lock:
            self._check_open()
            return self._published.get("")

    def get_attestor(self, name: str) -> AttestorRecord | None:
        with self._lock:
            self._check_open()
            return self._attestors.get(name)

    def list_attestors(self) -> list[AttestorRecord]:
        with self._lock:
            self._check_open()
            return [self._attestors[name] for name in sorted(self._attestors)]

    def get_grant_type(self, name: str) -> GrantTypeRecord | None:
        with self._lock:
            self._check_open()
            return self._grant_types.get(name)

    def list_grant_types(self) -> list[GrantTypeRecord]:
        with self._lock:
            self._check_open()
            return [self._grant_types[name] for name in sorted(self._grant_types)]

    def get_reference_token(self, token_hash: str) -> ReferenceTokenRecord | None:
        with self._lock:
            self._check_open()
            return self._reference_tokens.get(token_hash)

    def _audit_head_locked(self) -> tuple[int, str]:
        if not self._audit:
            return 0, _GENESIS_HASH
        last = self._audit[-1][0]
        return last.seq, last.hash

    def audit_head(self) -> tuple[int, str]:
        with self._lock:
            self._check_open()
            return self._audit_head_locked()

    def query_audit(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """Events matching every given filter, in seq order after offset/limit, and the count.

        Raise ``ValueError`` for a negative limit or offset.
        """
        if query.limit < 0 or query.offset < 0:
            raise ValueError("limit and offset must not be negative")
        with self._lock:
            self._check_open()
            matches = [
                event
                for event, ts in self._audit
                if (query.agent_id is None or event.agent_id == query.agent_id)
                and (query.task_id is None or event.task_id == query.task_id)
                and (query.event_type is None or event.event_type == query.event_type)
                and (query.outcome is None or event.outcome == query.outcome)
                and (query.since is None or ts >= query.since)
                and (query.until is None or ts <= query.until)
                and (query.principal_ref is None or event.principal_ref == query.principal_ref)
            ]
        return matches[query.offset : query.offset + query.limit], len(matches)

    def iter_audit(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditEvent]:
        """Every event with ``seq > after_seq`` in seq order; the lock is taken per batch."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        cursor = after_seq
        while True:
            with self._lock:
                self._check_open()
                start = bisect.bisect_right(self._audit_seqs, cursor)
                chunk = [event for event, _ in self._audit[start : start + batch]]
            yield from chunk
            if len(chunk) < batch:
                return
            cursor = chunk[-1].seq

    def audit_tree(self) -> AuditTree | None:
        with self._lock:
            self._check_open()
            return self._tree

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self._lock:
            self._check_open()
            return {key: self._tiles[key] for key in keys if key in self._tiles}

    def get_checkpoint(self, kind: str) -> CheckpointRecord | None:
        with self._lock:
            self._check_open()
            return self._checkpoints.get(kind)

    def prune(self, now: float) -> int:
        """Delete revocations, used nonces and launch tokens with ``expires_at <= now``.

        Return the number of entries removed. Audit events are never touched.
        """
        # Through write(), so that it is refused inside a transaction like everywhere else.
        with self.write():
            removed = 0
            for key in [k for k, r in self._revocations.items() if r.expires_at <= now]:
                del self._revocations[key]
                removed += 1
            for used in (self._nonces, self._dpop_proofs, self._evidence, self._offline_reports):
                for key in [k for k, exp in used.items() if exp <= now]:
                    del used[key]
                    removed += 1
            for key in [k for k, t in self._launch_tokens.items() if t.expires_at <= now]:
                del self._launch_tokens[key]
                removed += 1
            for key in [k for k, r in self._reference_tokens.items() if r.expires_at <= now]:
                del self._reference_tokens[key]
                removed += 1
            for table in (self._sessions, self._bindings, self._budgets):
                for key in [k for k, v in table.items() if v.expires_at <= now]:
                    del table[key]
                    removed += 1
            for key in [k for k, (_, exp) in self._leases.items() if exp <= now]:
                del self._leases[key]
                removed += 1
        return removed

    def safe_horizon(self) -> float | None:
        with self._lock:
            self._check_open()
            return self._safe_horizon

    def raise_safe_horizon(self, horizon: float) -> float:
        with self.write():
            if self._safe_horizon is None or horizon > self._safe_horizon:
                self._safe_horizon = horizon
            return self._safe_horizon

    def close(self) -> None:
        """Drop all state; later calls raise ``RuntimeError``. Closing twice is harmless."""
        with self._lock:
            self._closed = True
