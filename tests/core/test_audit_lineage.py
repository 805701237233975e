# Would fail if: an event about an agent's credential stopped recording the app it descends
# from, the human it acts for or its delegation chain's root, the lineage were left out of
# the event's hash, or the audit query by principal missed one of them.
"""Lineage on audit events (format v2): tenant, app, task, orchestrator, agent instance,
delegation chain root and human principal, where they exist, in the hash, and queried by
principal."""

from __future__ import annotations

import dataclasses
from typing import Any

from tasklease.core.auditformat import event_hash, verify_chain
from tasklease.core.store import AuditQuery
from tasklease.rules.auditchain import principal_ref

PRINCIPAL = "user:ada@example.com"


def test_everything_one_human_started_is_one_query(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    app, _ = broker.register_app(
        admin, name="helpdesk", scopes=["read:data:*"], token_ttl=600, ctx=kit.ctx
    )
    launch, _ = broker.create_launch_token(
        kit.app(broker, app.app_id).claims,
        agent_name="triage",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=False,
        ttl=None,
        ctx=kit.ctx,
        principal=PRINCIPAL,
        max_uses=2,
    )
    root = kit.register(broker, launch, orch_id="orch-9", task_id="task-9")
    helper = kit.register(broker, launch, orch_id="orch-9", task_id="task-9")
    renewed = broker.renew(root.claims, kit.ctx)
    delegated = broker.delegate(
        renewed.claims, delegate_to=helper.sub, scope=["read:data:*"], ttl=60, ctx=kit.ctx
    )
    broker.release(delegated.claims, kit.ctx)
    broker.revoke(admin, level="agent", target=root.sub, ctx=kit.ctx)

    found, total = broker.audit_events(
        AuditQuery(principal_ref=principal_ref(PRINCIPAL), limit=100)
    )
    kinds = [e.event_type for e in found]
    assert total == len(found)
    for kind in ("launch_token_issued", "agent_registered", "token_issued", "token_renewed",
                 "delegation_created", "token_released", "token_revoked"):  # fmt: skip
        assert kind in kinds, kinds
    for event in found:
        assert (event.tenant, event.app_id) == ("default", app.app_id)
        assert event.principal_ref == principal_ref(PRINCIPAL)
        if event.event_type != "launch_token_issued":  # before any agent or task
            assert event.task_id == "task-9" and event.orch_id == "orch-9" and event.agent_id
        assert event.version == 2
    created = next(e for e in found if e.event_type == "delegation_created")
    assert created.chain_root == root.sub and created.agent_id == helper.sub
    released = next(e for e in found if e.event_type == "token_released")
    assert released.chain_root == root.sub
    assert all(e.chain_root == "" for e in found if e.event_type == "agent_registered")
    # The operator's revocation of the root agent carries the agent's lineage.
    revoked = next(e for e in found if e.event_type == "token_revoked")
    assert revoked.agent_id == root.sub and revoked.task_id == "task-9"
    assert broker.audit_events(AuditQuery(principal_ref=principal_ref("user:nobody")))[1] == 0


def test_the_lineage_is_in_the_hash(broker: Any, kit: Any) -> None:
    kit.register(broker)
    events = list(broker.store.iter_audit())
    assert verify_chain(events).ok
    event = next(e for e in events if e.event_type == "agent_registered")
    assert event.principal_ref == principal_ref("admin")  # the creator, by default
    changes = (
        ("principal_ref", principal_ref("user:mallory")),
        ("app_id", "x"),
        ("tenant", "acme"),
        ("chain_root", "spiffe://x/agent/y"),
    )
    for field, value in changes:
        changed = dataclasses.replace(event, **{field: value})
        assert event_hash(changed.prev_hash, changed.seq, changed.timestamp, changed) != event.hash
