# Would fail if: an event about an agent's credential stopped recording the app it descends
# from, the human it acts for or its delegation chain's root, the lineage were left out of
# the event's hash, or the audit query by principal missed one of them.
"""Lineage on audit events (format v2): tenant, app, task, orchestrator, agent instance,
delegation chain root and human principal, where they exist, in the hash, and queried by
principal."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tasklease.core.auditformat import GENESIS_HASH, AuditEntry, event_hash, verify_chain
from tasklease.core.records import AuditEvent
from tasklease.core.store import AuditQuery
from tasklease.rules.auditchain import V2_FIELDS, AuditFormatError, principal_ref
from tasklease.rules.auditchain import event_hash as api_event_hash

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


def _v1_chain(count: int) -> list[AuditEvent]:
    """``count`` events of format v1, as written before lineage was recorded."""
    prev, events = GENESIS_HASH, []
    for seq in range(1, count + 1):
        entry = AuditEntry("agent_registered", detail=f"event {seq}")
        stamp = "2026-01-01T00:00:00Z"
        digest = event_hash(prev, seq, stamp, entry, "default", 1)
        events.append(
            AuditEvent(
                seq,
                stamp,
                entry.event_type,
                "",
                "",
                "",
                entry.detail,
                "",
                "success",
                0,
                "",
                "",
                prev,
                digest,
                "default",
                "",
                "",
                "",
                1,
            )  # fmt: skip
        )
        prev = digest
    return events


def test_lineage_on_a_v1_event_is_an_edit() -> None:
    """A v1 event's hash does not cover lineage, and v1 events had none: lineage found on
    one was written afterwards, by hand, and breaks the chain (an app or a person pinned
    on events they had no part in)."""
    events = _v1_chain(3)
    assert verify_chain(events).ok
    for field, value in (
        ("app_id", "app-framed"),
        ("principal_ref", principal_ref("user:mallory")),
        ("chain_root", "spiffe://x/agent/y"),
    ):
        edited = [*events[:1], dataclasses.replace(events[1], **{field: value}), *events[2:]]
        report = verify_chain(edited)
        assert not report.ok and report.broken_at == events[1].id, report
        assert field in report.reason
        # The same event as the API answers it: its hash cannot be recomputed.
        answered = {
            **{name: getattr(edited[1], name) for name in V2_FIELDS},
            "prev_hash": edited[1].prev_hash,
            "version": 1,
        }
        with pytest.raises(AuditFormatError, match=field):
            api_event_hash(answered)
        answered[field] = ""
        assert api_event_hash(answered) == events[1].hash
