"""Invariant 1 for the holder: an agent that may no longer receive authority can neither
renew nor hand on a token it still holds (docs/authority.md, "The one issuance check")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.errors import Forbidden, TaskleaseError, Unauthorized
from tasklease.core.pending import complete
from tasklease.core.store import AuditQuery
from tasklease.storage import MemoryStore, SQLiteStore

from .conftest import Agent, b64, declare_done


def refused(broker: Broker, call: Any, kind: type[TaskleaseError] = Forbidden) -> str:
    """``call`` is refused with one audit event under its denial id; that event's detail."""
    with pytest.raises(kind) as info:
        call()
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={info.value.denial_id}" in e.detail]
    return event.detail


def renewal_refused(broker: Broker, claims: Any, ctx: Any) -> str:
    return refused(broker, lambda: broker.renew(claims, ctx))


def delegation_refused(broker: Broker, claims: Any, to: str, ctx: Any) -> str:
    """A delegator no longer in good standing holds nothing to hand on (401, as for a
    delegator whose lineage has ended)."""
    return refused(
        broker,
        lambda: broker.delegate(claims, delegate_to=to, scope=["read:data:1"], ttl=None, ctx=ctx),
        Unauthorized,
    )


def held_by_a_revoked_task(broker: Broker, kit: Any) -> tuple[Any, Agent]:
    """A token delegated to b (it carries a's task), checked in as b's task is revoked:
    the revocation ends it at validation (decision 134); a call already past validation
    still finds its holder out of standing."""
    a = kit.register(broker, task_id="task-a")
    b = kit.register(broker, task_id="task-b")
    c = kit.register(broker, task_id="task-c")
    held = broker.delegate(a.claims, delegate_to=b.sub, scope=["read:data:*"], ttl=300, ctx=kit.ctx)
    broker.clock.advance(2)
    claims = broker.authenticate(kit.bearer(held.token), kit.ctx)
    broker.revoke(kit.admin(broker).claims, level="task", target="task-b", ctx=kit.ctx)
    broker.clock.advance(2)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(held.token), kit.ctx)
    return claims, c


def test_a_holder_whose_task_was_revoked_neither_renews_nor_delegates(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker()
    claims, c = held_by_a_revoked_task(broker, kit)
    assert "agent revoked at level task" in renewal_refused(broker, claims, kit.ctx)
    detail = delegation_refused(broker, claims, c.sub, kit.ctx)
    assert "agent revoked at level task" in detail and "delegator" in detail


def resumed(broker: Broker, kit: Any, agent: Agent) -> Any:
    """``agent`` resumes; its first token, which a resumption leaves alive, stays in hand."""
    broker.clock.advance(2)
    nonce, _ = broker.challenge()
    issued = broker.resume(
        agent_id=agent.sub,
        nonce=nonce,
        signature=b64(agent.key.sign(bytes.fromhex(nonce)).signature),
        ctx=kit.ctx,
    )
    broker.clock.advance(1)
    return issued.claims


def done(broker: Broker, kit: Any, agent: Agent, claims: Any) -> None:
    """``agent`` declares itself done with the token of ``claims``: it is released."""
    declare_done(broker, kit.ctx, agent, claims)


def test_an_agent_that_declared_itself_done_neither_renews_nor_delegates(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker()
    agent = kit.register(broker, task_id="task-a")
    other = kit.register(broker, task_id="task-b")
    done(broker, kit, agent, resumed(broker, kit, agent))
    claims = broker.authenticate(kit.bearer(agent.token), kit.ctx)
    assert "agent session is released" in renewal_refused(broker, claims, kit.ctx)
    assert "agent session is released" in delegation_refused(broker, claims, other.sub, kit.ctx)


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_a_renewal_that_loses_the_race_with_the_release_issues_nothing(
    make_broker: Any, kit: Any, storage: str, tmp_path: Path
) -> None:
    """Checked before the release committed, written after it: the renewal's own write
    finds the session no longer active, and nothing is issued."""
    store = SQLiteStore(tmp_path / "broker.db") if storage == "sqlite" else MemoryStore()
    broker = make_broker(store=store)
    agent = kit.register(broker)
    then = resumed(broker, kit, agent)
    claims = broker.authenticate(kit.bearer(agent.token), kit.ctx)
    pending = broker.prepare_renew(claims, kit.ctx)  # checked, not written
    done(broker, kit, agent, then)
    with pytest.raises(TaskleaseError, match="token verification failed") as info:
        complete(broker.kernel, pending)
    assert info.value.denial_id
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={info.value.denial_id}" in e.detail]
    assert "released meanwhile" in event.detail


def test_a_delegation_from_a_token_whose_ancestor_ended_meanwhile_is_refused(
    make_broker: Any, kit: Any
) -> None:
    """A token validated before its chain was revoked, handed on after: the issuance
    check reads the lineage it would grant against the revocation index and refuses,
    rather than issuing a token born dead."""
    broker = make_broker()
    agent = kit.register(broker, task_id="task-a")
    other = kit.register(broker, task_id="task-b")
    claims = broker.authenticate(kit.bearer(agent.token), kit.ctx)
    broker.revoke(kit.admin(broker).claims, level="chain", target=claims.jti, ctx=kit.ctx)
    detail = delegation_refused(broker, claims, other.sub, kit.ctx)
    assert f"ancestor {claims.jti} has ended" in detail, detail
    events, _ = broker.store.query_audit(AuditQuery(event_type="delegation_created"))
    assert events == []
