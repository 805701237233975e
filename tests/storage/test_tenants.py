# Would fail if: a tenant's view of the store read or wrote another tenant's rows (apps,
# operators, launch tokens, nonces, agents, sessions, revocations and their feed, the audit
# chain and its export), if the same key could not exist in two tenants, if pruning one
# tenant touched another, or if the tenant registry lost its uniqueness rules.
"""Tenants in storage, on every backend: the registry, and 100 tenants side by side in one
database without a single read or write crossing from one to another."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from tasklease.core.clock import format_rfc3339
from tasklease.core.errors import Conflict, NotFound
from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AppRecord,
    AuditEvent,
    AuditQuery,
    LaunchTokenRecord,
    OperatorRecord,
    RevocationRecord,
    Store,
    TenantRecord,
)

NOW = 1_800_000_000.0
TENANTS = 100


def _tenant(name: str, **changes: object) -> TenantRecord:
    record = TenantRecord(
        name=name,
        trust_domain=f"{name}.example.org",
        status="active",
        created_at=NOW,
        created_by="admin",
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def test_the_registry_keeps_names_and_trust_domains_unique(store: Store) -> None:
    with store.write() as tx:
        tx.insert_tenant(_tenant("acme"))
    with pytest.raises(Conflict, match="name"), store.write() as tx:
        tx.insert_tenant(_tenant("acme", trust_domain="other.example.org"))
    with pytest.raises(Conflict, match="trust domain"), store.write() as tx:
        tx.insert_tenant(_tenant("globex", trust_domain="acme.example.org"))
    removed = _tenant("acme", status="removed", removed_at=NOW + 5)
    with store.write() as tx:
        tx.update_tenant(removed)
    with pytest.raises(NotFound), store.write() as tx:
        tx.update_tenant(_tenant("nobody"))
    # A removed tenant stays so: a second removal (one that raced the first) changes nothing.
    with pytest.raises(NotFound), store.write() as tx:
        tx.update_tenant(replace(removed, removed_at=NOW + 9))
    # Every tenant's view reads the same registry.
    assert store.for_tenant("globex").get_tenant("acme") == removed
    assert [t.name for t in store.list_tenants()] == ["acme"]
    assert store.get_tenant("nobody") is None


def test_a_malformed_tenant_id_is_refused(store: Store) -> None:
    for bad in ("", "Acme", "a b", "x'; DROP TABLE apps; --", "-a", "a-", "a" * 64, "é"):
        with pytest.raises(ValueError):
            store.for_tenant(bad)
    assert store.tenant == "default"
    assert store.for_tenant("acme").tenant == "acme"


def _fill(view: Store, name: str, seq0: int) -> None:
    """The same keys in every tenant, each row marked with the tenant's name."""
    token_hash = hashlib.sha256(b"launch").hexdigest()
    agent_id = "spiffe://shared.example.org/agent/orch/task/inst"
    with view.write() as tx:
        tx.insert_app(
            AppRecord(
                app_id="app-1",
                name="billing",
                client_id="client-1",
                secret_hash=f"hash-{name}",
                scopes=(f"read:{name}:*",),
                token_ttl=300,
                status="active",
                created_at=NOW,
                updated_at=NOW,
                created_by=name,
            )
        )
        tx.insert_operator(
            OperatorRecord(
                name="admin",
                role="admin",
                secret_hash=f"hash-{name}",
                public_key=b"",
                status="active",
                created_at=NOW,
                updated_at=NOW,
                created_by=name,
            )
        )
        tx.insert_launch_token(
            LaunchTokenRecord(
                token_hash=token_hash,
                agent_name=name,
                allowed_scope=(f"read:{name}:*",),
                max_ttl=300,
                single_use=True,
                created_at=NOW,
                expires_at=NOW + 60,
                created_by=name,
            )
        )
        assert tx.consume_nonce("nonce-1", NOW + 60)
        tx.insert_agent(
            AgentRecord(
                agent_id=agent_id,
                public_key=bytes(32),
                orch_id="orch",
                task_id=f"task-{name}",
                scope=("read:data:*",),
                app_id="app-1",
                client_id="client-1",
                registered_at=NOW,
            )
        )
        tx.put_agent_session(
            AgentSession(
                agent_id=agent_id,
                principal=f"user:{name}",
                heartbeat_required=True,
                last_heartbeat=NOW,
                resumes=0,
                state="active",
                expires_at=NOW + 60,
            )
        )
        # One shared target and one of the tenant's own.
        for target in ("shared-task", f"task-{name}"):
            tx.insert_revocation(
                RevocationRecord(
                    seq=0, level="task", target=target, revoked_at=int(NOW), expires_at=NOW + 600
                )
            )
        assert tx.acquire_lease("sweeper", name, NOW, NOW + 30)
        prev = "0" * 64
        events = []
        for seq in range(1, 4):
            digest = hashlib.sha256(f"{name}|{seq}".encode()).hexdigest()
            events.append(
                AuditEvent(
                    seq=seq,
                    timestamp=format_rfc3339(NOW + seq),
                    event_type="agent_registered",
                    agent_id=agent_id,
                    task_id=f"task-{name}",
                    orch_id="orch",
                    detail=f"tenant={name}",
                    resource="",
                    outcome="success",
                    deleg_depth=0,
                    deleg_chain_hash="",
                    request_id=f"req-{name}-{seq}",
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
        tx.append_audit(events)


def test_a_hundred_tenants_never_see_each_other(store: Store) -> None:
    names = [f"t{i:03d}" for i in range(TENANTS)]
    views = {name: store.for_tenant(name) for name in names}
    for i, (name, view) in enumerate(views.items()):
        _fill(view, name, i)
    token_hash = hashlib.sha256(b"launch").hexdigest()
    agent_id = "spiffe://shared.example.org/agent/orch/task/inst"
    for name, view in views.items():
        assert [a.created_by for a in view.list_apps()] == [name]
        assert view.get_app("app-1").scopes == (f"read:{name}:*",)  # type: ignore[union-attr]
        assert view.get_app_by_client_id("client-1").secret_hash == f"hash-{name}"  # type: ignore[union-attr]
        assert [o.created_by for o in view.list_operators()] == [name]
        assert view.get_launch_token(token_hash).agent_name == name  # type: ignore[union-attr]
        assert view.get_agent(agent_id).task_id == f"task-{name}"  # type: ignore[union-attr]
        assert view.get_agent_session(agent_id).principal == f"user:{name}"  # type: ignore[union-attr]
        assert [s.principal for s in view.silent_agents(NOW + 1, 1000)] == [f"user:{name}"]
        # The revocation feed and the loaded index: this tenant's two entries only.
        fed = {r.target for r in view.revocations_since(0)}
        assert fed == {"shared-task", f"task-{name}"}
        assert {r.target for r in view.load_revocations(NOW)} == fed
        found = view.find_revocations([("task", f"task-{n}") for n in names])
        assert [r.target for r in found] == [f"task-{name}"]
        # The audit chain and its export: its own three events, from seq 1.
        exported = list(view.iter_audit())
        assert [e.detail for e in exported] == [f"tenant={name}"] * 3
        assert exported[0].prev_hash == "0" * 64
        assert view.audit_head()[0] == 3
        page, total = view.query_audit(AuditQuery(agent_id=agent_id, limit=1000))
        assert total == 3 and {e.task_id for e in page} == {f"task-{name}"}
        # Counted without a filter (the chain's length), and as successes (all less the
        # others): this tenant's events only.
        assert view.query_audit(AuditQuery(limit=1))[1] == 3
        assert view.query_audit(AuditQuery(outcome="success", limit=1))[1] == sum(
            e.outcome == "success" for e in exported
        )
        assert view.query_audit(AuditQuery(since=0, limit=1))[1] == 3
    # The default tenant saw none of it.
    assert store.query_audit(AuditQuery(limit=1)) == ([], 0)
    assert store.query_audit(AuditQuery(outcome="success", since=0)) == ([], 0)
    assert store.list_apps() == [] and store.revocations_since(0) == []
    assert list(store.iter_audit()) == [] and store.audit_head() == (0, "0" * 64)
    # Keys already used by every tenant are still free in the default one ...
    with store.write() as tx:
        assert tx.consume_nonce("nonce-1", NOW + 60)
    # ... and a nonce, a launch token use or a lease taken in one is not taken in another.
    first, second = views["t000"], views["t001"]
    with first.write() as tx:
        assert tx.consume_launch_token(token_hash, NOW)
    with second.write() as tx:
        assert tx.consume_launch_token(token_hash, NOW)
        assert not tx.consume_nonce("nonce-1", NOW + 60)
        assert not tx.acquire_lease("sweeper", "intruder", NOW, NOW + 30)
        # Nor given up from another: the name is the first tenant's holder's.
        assert not tx.release_lease("sweeper", "t000")
    with first.write() as tx:
        assert not tx.acquire_lease("sweeper", "intruder", NOW, NOW + 30)
    # Pruning one tenant leaves the others' rows.
    first.prune(NOW + 10_000)
    assert first.revocations_since(0) == [] and first.get_launch_token(token_hash) is None
    assert {r.target for r in second.revocations_since(0)} == {"shared-task", "task-t001"}
    assert second.get_launch_token(token_hash) is not None
