"""An agent asking the issuance policy is in the app it is registered under, whatever
token it asks with (docs/policy.md: ``Agent`` ... "in its `App`").

A token one app's agent delegates to another app's agent lists the delegator's app first
in its lineage (then the holder's). The policy's ``Agent`` took its app from the first
``app:`` of the token's lineage, so app B's agent, asking with a token app A's agent had
handed it, was seen as in ``App::"A"``: a tenant's ``forbid`` on ``principal in App::"B"``
did not apply to what B's agent delegated or narrowed from such a token.

Would fail if: the ``Agent`` principal of a delegation or a narrowing took its app from
the token's lineage rather than from the holder's registration.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.errors import Forbidden, TaskleaseError
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.policy import DEFAULT_POLICY, compile_policies
from tasklease.core.store import AuditQuery

SCOPE = ["read:data:*"]


def _app_agent(broker: Broker, kit: Any, name: str, task: str) -> tuple[str, Any]:
    """App ``name`` (its own sign-in) and an agent registered with its launch token."""
    app, secret = broker.register_app(
        kit.admin(broker).claims, name=name, scopes=SCOPE, token_ttl=300, ctx=kit.ctx
    )
    signed_in = broker.app_auth(app.client_id, secret, kit.ctx)
    launch, _record = broker.create_launch_token(
        signed_in.claims,
        agent_name=name,
        allowed_scope=SCOPE,
        max_ttl=300,
        single_use=True,
        ttl=600,
        ctx=kit.ctx,
    )
    return app.app_id, kit.register(broker, launch, SCOPE, task_id=task)


def _forbid(broker: Broker, app_id: str, action: str) -> None:
    rule = (
        f'@id("closed-{action}")\n'
        f'forbid (principal in App::"{app_id}", action == Action::"{action}", resource);\n'
    )
    broker.policy.use(compile_policies([("all.cedar", DEFAULT_POLICY + rule)], "test"))


def _decided_by(broker: Broker, denial_id: str, policy: str) -> None:
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    [detail] = [e.detail for e in events if denial_id in e.detail]
    assert f"deny[{policy}]" in detail


def test_another_apps_token_does_not_take_its_holder_out_of_its_app(
    broker: Broker, kit: Any
) -> None:
    app_a, a = _app_agent(broker, kit, "alpha", "task-a")
    app_b, b = _app_agent(broker, kit, "beta", "task-b")
    _other, c = _app_agent(broker, kit, "gamma", "task-c")
    handed = broker.delegate(a.claims, delegate_to=b.sub, scope=SCOPE, ttl=60, ctx=kit.ctx)
    assert handed.claims.lineage[0] == f"app:{app_a}"  # the delegator's app comes first
    _forbid(broker, app_b, "delegate")

    # B's agent may delegate neither with its own token nor with the one A's agent gave it.
    for claims in (b.claims, handed.claims):
        with pytest.raises(Forbidden) as refused:
            broker.delegate(claims, delegate_to=c.sub, scope=["read:data:1"], ttl=30, ctx=kit.ctx)
        assert refused.value.denial_id
        _decided_by(broker, refused.value.denial_id, "closed-delegate")
    # A's agent is not B's: the policy does not concern it.
    assert broker.delegate(a.claims, delegate_to=c.sub, scope=["read:data:1"], ttl=30, ctx=kit.ctx)


def test_a_narrowing_by_another_apps_token_is_decided_as_its_holders_app(
    broker: Broker, kit: Any
) -> None:
    _app_a, a = _app_agent(broker, kit, "alpha", "task-a")
    app_b, b = _app_agent(broker, kit, "beta", "task-b")
    handed = broker.delegate(a.claims, delegate_to=b.sub, scope=SCOPE, ttl=60, ctx=kit.ctx)
    _forbid(broker, app_b, "narrow")
    request = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=handed.token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read:data:1",
    )
    with pytest.raises(TaskleaseError) as refused:  # the token endpoint's error
        broker.exchange_token(request, kit.ctx)
    assert refused.value.denial_id
    _decided_by(broker, refused.value.denial_id, "closed-narrow")
