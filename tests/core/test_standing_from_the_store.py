"""An agent's standing is read from the shared store as well as from this worker's
revocation index: an agent revoked by another worker, whose entry this worker has not yet
read, is already out of standing here (its record's status), and so is an agent whose app
another worker removed (the app's record). Two brokers on one store stand for two workers;
the second has not refreshed its revocations."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import NotFound
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import APP_SCOPES, KIND_APP, mint


def _workers(make_broker: Any, store: Any, clock: Any, keyring: Any) -> tuple[Any, Any]:
    first = make_broker(store=store, clock=clock, keyring=keyring)
    second = make_broker(store=store, clock=clock, keyring=keyring)
    return first, second


def _delegation_refused(broker: Any, kit: Any, to: str) -> str:
    """Delegating to ``to`` is refused (as an unknown delegate) with one audit event; its detail."""
    delegator = kit.register(broker, task_id="task-delegator")
    with pytest.raises(NotFound) as info:
        broker.delegate(
            delegator.claims, delegate_to=to, scope=["read:data:1"], ttl=60, ctx=kit.ctx
        )
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={info.value.denial_id}" in e.detail]
    return str(event.detail)


def test_an_agent_revoked_by_another_worker_is_out_of_standing_before_its_entry_arrives(
    make_broker: Any, store: Any, clock: Any, keyring: Any, kit: Any
) -> None:
    first, second = _workers(make_broker, store, clock, keyring)
    agent = kit.register(first)
    first.revoke(kit.admin(first).claims, level="agent", target=agent.sub, ctx=kit.ctx)
    clock.advance(1)
    assert second.kernel.revocations.match(second.validate(agent.token)) is None  # not read yet
    _, why = second.kernel.agent_standing(agent.sub)
    assert why == "agent is revoked"
    assert "agent is revoked" in _delegation_refused(second, kit, agent.sub)


def test_an_agent_whose_app_another_worker_removed_is_out_of_standing(
    make_broker: Any, store: Any, clock: Any, keyring: Any, kit: Any
) -> None:
    first, second = _workers(make_broker, store, clock, keyring)
    admin = kit.admin(first).claims
    app, _ = first.register_app(
        admin, name="app-standing", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    _, creator = mint(
        first.keyring,
        kind=KIND_APP,
        iss=first.config.issuer,
        sub=f"app:{app.app_id}",
        aud=first.config.audience,
        iat=int(clock.now()),
        ttl=60,
        scope=APP_SCOPES,
        client_id=app.client_id,
    )
    launch, _ = first.create_launch_token(
        creator,
        agent_name="by-app",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    agent = kit.register(first, launch)
    assert second.kernel.agent_standing(agent.sub)[1] == ""
    first.deregister_app(admin, app.app_id, kit.ctx)
    clock.advance(1)
    _, why = second.kernel.agent_standing(agent.sub)
    assert why == f"app {app.app_id} removed"
    assert f"app {app.app_id} removed" in _delegation_refused(second, kit, agent.sub)
