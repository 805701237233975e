"""A write transaction over the in-memory store, undone from its undo log."""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from tasklease.core.auditformat import timestamp_seconds
from tasklease.core.errors import Conflict, NotFound
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AttestorRecord,
    AuditEvent,
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
    RevocationWrite,
    TenantRecord,
    TileAppend,
    check_revocation_target,
)
from tasklease.storage._memory_tables import MemoryTables

__all__ = ["MemoryWriteTx"]

_V = TypeVar("_V")


class MemoryWriteTx:
    """One transaction over a memory store; valid only inside its ``write()``."""

    def __init__(self, store: MemoryTables) -> None:
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
        """Replace the active tenant named ``tenant.name``; raise ``NotFound`` if there is
        none (no such name, or removed: a removed tenant stays so)."""
        self._check_open()
        tenants = self._store._shared.tenants
        found = tenants.get(tenant.name)
        if found is None or found.status != "active":
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

    def get_app(self, app_id: str) -> AppRecord | None:
        self._check_open()
        return self._store._apps.get(app_id)

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

    def get_operator(self, name: str) -> OperatorRecord | None:
        self._check_open()
        return self._store._operators.get(name)

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
        ended = self._store._revocations.get(f"agent\x00{record.created_by}")
        if ended is not None and ended.revoked_at >= record.created_at:
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

    def insert_revocation(self, record: RevocationRecord) -> RevocationWrite:
        """Store a revocation with a fresh ``seq``; ``record.seq`` is ignored.

        A present (level, target) whose ``revoked_at`` or ``expires_at`` is earlier takes
        the later of each and a new ``seq`` greater than every seq handed out before, so
        pollers of ``revocations_since`` see the change (``WIDENED``).
        """
        self._check_open()
        check_revocation_target(record)
        revocations = self._store._revocations
        key = f"{record.level}\x00{record.target}"
        existing = revocations.get(key)
        if existing is None:
            seq = self._next_revocation_seq()
            self._set(revocations, key, dataclasses.replace(record, seq=seq))
            return RevocationWrite.INSERTED
        revoked_at = max(existing.revoked_at, record.revoked_at)
        expires_at = max(existing.expires_at, record.expires_at)
        if (revoked_at, expires_at) == (existing.revoked_at, existing.expires_at):
            return RevocationWrite.UNCHANGED
        extended = RevocationRecord(
            level=existing.level,
            target=existing.target,
            revoked_at=revoked_at,
            expires_at=expires_at,
            seq=self._next_revocation_seq(),
        )
        self._set(revocations, key, extended)
        return RevocationWrite.WIDENED

    # -- agent sessions, leases, discovery ------------------------------------

    def get_agent_session(self, agent_id: str) -> AgentSession | None:
        self._check_open()
        return self._store._sessions.get(agent_id)

    def put_agent_session(self, session: AgentSession) -> None:
        self._check_open()
        self._set(self._store._sessions, session.agent_id, session)

    def find_revocation(self, level: str, target: str) -> RevocationRecord | None:
        self._check_open()
        return self._store._revocations.get(f"{level}\x00{target}")

    def find_revocations(self, keys: Sequence[tuple[str, str]]) -> list[RevocationRecord]:
        found = (self.find_revocation(level, target) for level, target in keys)
        return [record for record in found if record is not None]

    def raise_resumes(self, agent_id: str, resumes: int) -> bool | None:
        self._check_open()
        session = self._store._sessions.get(agent_id)
        if session is None:
            return None
        if session.resumes >= resumes or session.state != "active":
            return False
        self._set(self._store._sessions, agent_id, dataclasses.replace(session, resumes=resumes))
        return True

    def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        self._check_open()
        leases = self._store._leases
        current = leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._set(leases, name, (holder, expires_at))
        return True

    def release_lease(self, name: str, holder: str) -> bool:
        self._check_open()
        leases = self._store._leases
        current = leases.get(name)
        if current is None or current[0] != holder:
            return False
        del leases[name]
        self._undo.append(lambda: leases.__setitem__(name, current))
        return True

    def put_discovery_binding(self, binding: DiscoveryBinding) -> bool:
        self._check_open()
        current = self._store._bindings.get(binding.agent_id)
        if current is not None and current.issued_at >= binding.issued_at:
            return False
        self._set(self._store._bindings, binding.agent_id, binding)
        return True

    # -- federation ------------------------------------------------------------------------

    def get_federation(self, trust_domain: str) -> FederationRecord | None:
        self._check_open()
        return self._store._federations.get(trust_domain)

    def put_federation(self, record: FederationRecord) -> None:
        self._check_open()
        self._set(self._store._federations, record.trust_domain, record)

    def put_feed_heard(self, trust_domain: str, heard_at: float) -> None:
        self._check_open()
        table = self._store._feeds_heard
        if table.get(trust_domain, heard_at) <= heard_at:
            self._set(table, trust_domain, heard_at)

    def put_retired_key(self, kid: str, retired_at: float) -> bool:
        self._check_open()
        table = self._store._retired_keys
        if kid in table:
            return False
        self._set(table, kid, retired_at)
        return True

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

    def get_admin_credential(self) -> str | None:
        self._check_open()
        held = self._store._shared.admin_credential
        return None if held is None else held[0]

    def put_admin_credential(self, secret_hash: str, changed_at: float) -> None:
        self._check_open()
        shared = self._store._shared
        old = shared.admin_credential
        self._undo.append(lambda: setattr(shared, "admin_credential", old))
        shared.admin_credential = (secret_hash, changed_at)

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

    def insert_grant_type(self, record: GrantTypeRecord) -> None:
        """Store a new grant type; raise ``Conflict`` if one of its name exists."""
        self._check_open()
        if record.name in self._store._grant_types:
            raise Conflict(f"grant type {record.name} exists")
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
            parsed.append((event, timestamp_seconds(event.timestamp)))
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
