# Would fail if: delegation compared the requested scope with anything wider than the
# delegator's own token scope (its launch ceiling, its app's ceiling), or let a delegate
# ask for an audience its delegator's token does not have.
"""TM-20 — scope escalation through delegation: a low-privilege agent uses a delegation
hop to obtain, or hand on, more than it holds (the pattern's "cross-agent privilege
escalation").

A delegated token holds a subset of the delegator's scope and its audience or a
narrower one; a delegate cannot re-widen what it was given; operator and app authority
never flows into an agent by delegation. Each refusal is audited and issues nothing.
"""

from __future__ import annotations

import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import bearer, refused

pytestmark = pytest.mark.slow

HELD = ["read:tickets:*"]


@pytest.mark.parametrize(
    "wanted",
    [
        ["write:tickets:1"],
        ["read:payments:1"],
        ["read:tickets:1", "write:tickets:1"],  # one good scope does not carry a bad one
        ["admin:revoke:*"],
    ],
    ids=["another-action", "another-resource", "one-more-scope", "operator-authority"],
)
def test_a_delegation_above_the_delegators_scope_is_refused(
    broker: RunningBroker, wanted: list[str]
) -> None:
    delegator, delegate = broker.register(HELD), broker.register(["read:tickets:1"])
    event = refused(
        broker,
        broker.delegate(delegator.access_token, delegate.agent_id, wanted),
        403,
        "scope_violation",
        "scope would widen",
    )
    assert event["event_type"] == "delegation_attenuation_violation"
    assert delegator.agent_id in event["detail"]


def test_a_delegate_cannot_widen_what_it_was_given(broker: RunningBroker) -> None:
    root, middle, leaf = (broker.register(HELD) for _ in range(3))
    given = broker.delegate(root.access_token, middle.agent_id, ["read:tickets:7"])
    assert given.status_code == 200, given.text
    narrow = given.json()["access_token"]
    assert jwt_parts(narrow)[1]["scope"] == "read:tickets:7"
    # The middle agent registered with read:tickets:* itself, but the delegated token
    # carries only what was handed to it: it cannot pass on more than that.
    resp = broker.delegate(narrow, leaf.agent_id, ["read:tickets:*"])
    refused(broker, resp, 403, "scope_violation", "scope would widen")
    # Renewing the delegated token does not widen it either.
    renewed = broker.post("/v1/token/renew", headers=bearer(narrow))
    assert renewed.status_code == 200, renewed.text
    assert jwt_parts(renewed.json()["access_token"])[1]["scope"] == "read:tickets:7"


def test_operator_and_app_tokens_never_delegate(broker: RunningBroker) -> None:
    agent = broker.register(HELD)
    app_token = broker.app_token(broker.create_app(["read:tickets:*"]))
    for token in (broker.admin_token(), app_token):
        resp = broker.delegate(token, agent.agent_id, ["read:tickets:1"])
        refused(broker, resp, 403, "forbidden")


def test_a_delegation_cannot_widen_the_audience(broker: RunningBroker) -> None:
    launch = broker.launch_token(HELD, resource=["https://files.example"])
    body, _ = broker.register_body(launch, HELD)
    registered = broker.post("/v1/register", json={**body, "resource": "https://files.example"})
    assert registered.status_code == 200, registered.text
    token = registered.json()["access_token"]
    helper = broker.register(HELD)
    resp = broker.delegate(
        token, helper.agent_id, ["read:tickets:1"], resource="https://payments.example"
    )
    refused(broker, resp, 400, "invalid_target", "audience would widen")
    kept = broker.delegate(token, helper.agent_id, ["read:tickets:1"])
    assert kept.status_code == 200, kept.text
    assert jwt_parts(kept.json()["access_token"])[1]["aud"] == ["https://files.example"]
