"""One tenant's tables in the in-memory store, and the reads over them."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

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
)
from tasklease.core.tenantids import DEFAULT_TENANT, check_tenant_id

__all__ = ["MemoryShared", "MemoryTables"]

_GENESIS_HASH = "0" * 64


def _page_limit(query: ListQuery) -> int:
    """A listing's page size: positive, at most 1000 (as the SQL stores)."""
    if query.limit <= 0:
        raise ValueError("limit must be positive")
    return min(query.limit, 1000)


class MemoryShared:
    """What a memory store and its tenant views share: the lock, the writer, the
    tenant registry and the views themselves."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.writer: int | None = None  # thread id inside write(), to refuse nesting
        self.closed = False
        self.safe_horizon: float | None = None
        self.admin_credential: tuple[str, float] | None = None
        self.tenants: dict[str, TenantRecord] = {}
        self.views: dict[str, MemoryTables] = {}


class MemoryTables:
    """One tenant's dicts of a memory store (:class:`~tasklease.storage.memory.MemoryStore`
    extends it), read under the lock the tenants share."""

    def __init__(self, shared: MemoryShared, tenant: str) -> None:
        # What the default tenant's store and every tenant view share (for_tenant).
        self._shared = shared
        self._tenant = check_tenant_id(tenant)
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
        self._feeds_heard: dict[str, float] = {}  # trust domain -> heard current at
        self._retired_keys: dict[str, float] = {}  # kid -> retired at
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

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

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
            newer = [r for r in self._revocations.values() if r.seq > seq]
            return sorted(newer, key=lambda r: r.seq)

    def revocation_high_water(self) -> int:
        with self._lock:
            self._check_open()
            return self._revocation_seq

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

    def live_agents(self, now: float, registered_from: float) -> int:
        with self._lock:
            self._check_open()
            views = [
                view
                for name, view in self._shared.views.items()
                if name == DEFAULT_TENANT
                or (name in self._shared.tenants and self._shared.tenants[name].status == "active")
            ]
            return sum(view._live_agents(now, registered_from) for view in views)

    def _live_agents(self, now: float, registered_from: float) -> int:
        """This tenant's part of :meth:`live_agents` (under the lock)."""
        in_force = {
            (r.level, r.target): r.revoked_at
            for r in self._revocations.values()
            if r.expires_at > now and r.level in ("task", "chain")
        }
        count = 0
        for agent in self._agents.values():
            session = self._sessions.get(agent.agent_id)
            app = self._apps.get(agent.app_id)
            task = in_force.get(("task", agent.task_id))
            ancestors = {*agent.lineage, *((f"app:{agent.app_id}",) if agent.app_id else ())}
            count += (
                agent.registered_at >= registered_from
                and agent.status == "active"
                and (agent.ceiling == 0 or agent.ceiling > now)
                and (session is None or session.state == "active")
                and (app is None or app.status == "active")
                and (task is None or not task + 1 > agent.registered_at)
                and not any(("chain", a) in in_force for a in ancestors)
            )
        return count

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

    def feed_heard(self, trust_domain: str) -> float | None:
        with self._lock:
            self._check_open()
            return self._feeds_heard.get(trust_domain)

    def retired_keys(self) -> frozenset[str]:
        with self._lock:
            self._check_open()
            return frozenset(self._retired_keys)

    def admin_credential(self) -> str | None:
        with self._lock:
            self._check_open()
            held = self._shared.admin_credential
            return None if held is None else held[0]

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
        for event, _ in self.iter_audit_ts(after_seq, batch):
            yield event

    def iter_audit_ts(
        self, after_seq: int = 0, batch: int = 5000
    ) -> Iterator[tuple[AuditEvent, float]]:
        """As :meth:`iter_audit`, each event with the ``ts`` kept beside it."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        cursor = after_seq
        while True:
            with self._lock:
                self._check_open()
                start = bisect.bisect_right(self._audit_seqs, cursor)
                chunk = self._audit[start : start + batch]
            yield from chunk
            if len(chunk) < batch:
                return
            cursor = chunk[-1][0].seq

    def audit_tree(self) -> AuditTree | None:
        with self._lock:
            self._check_open()
            return self._tree

    def database_id(self) -> str:
        return ""  # no copy of a memory store ever comes back: nothing to compare with

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self._lock:
            self._check_open()
            return {key: self._tiles[key] for key in keys if key in self._tiles}

    def get_checkpoint(self, kind: str) -> CheckpointRecord | None:
        with self._lock:
            self._check_open()
            return self._checkpoints.get(kind)
