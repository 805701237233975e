# Would fail if: registration stopped holding `requested_scope` to the launch token's
# `allowed_scope` (the kernel's "scope only narrows" step), or an app's launch tokens
# stopped being held to the app's scope ceiling.
"""TM-05 — scope escalation at registration: an agent (or the app that launches it)
asks for more than it was allowed.

The launch token's ``allowed_scope`` is a ceiling for the agent, and an app's scopes are
a ceiling for its launch tokens. Asking above either is refused and audited, consumes
nothing, and a registration within the ceiling gets what it asked for, not the ceiling.
"""

from __future__ import annotations

import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import bearer, refused

pytestmark = pytest.mark.slow

CEILING = ["read:tickets:4711"]


@pytest.mark.parametrize(
    "wanted",
    [
        ["write:tickets:4711"],
        ["read:tickets:*"],
        ["read:tickets:4711", "read:tickets:4712"],
        ["read:payments:4711"],
    ],
    ids=["another-action", "wildcard-identifier", "one-more-identifier", "another-resource"],
)
def test_scope_above_the_launch_ceiling_is_refused(
    broker: RunningBroker, wanted: list[str]
) -> None:
    launch = broker.launch_token(CEILING)
    body, _ = broker.register_body(launch, wanted)
    event = refused(broker, broker.post("/v1/register", json=body), 403, "scope_violation", "scope")
    assert event["event_type"] == "registration_policy_violation"
    # Refused before anything was consumed: the ticket still registers within its ceiling.
    agent = broker.register(CEILING, launch_token=launch)
    assert jwt_parts(agent.access_token)[1]["scope"].split(" ") == CEILING


@pytest.mark.parametrize("pattern", ["read:*:*", "*:tickets:4711", "read:tickets:47*", "read"])
def test_wider_patterns_are_not_scopes_at_all(broker: RunningBroker, pattern: str) -> None:
    # Wildcards exist only as a whole identifier: nothing else can be widened by a pattern.
    launch = broker.launch_token(CEILING)
    body, _ = broker.register_body(launch, [pattern])
    resp = broker.post("/v1/register", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "invalid_request"
    broker.register(CEILING, launch_token=launch)  # nothing was consumed


def test_a_registration_gets_what_it_asked_for_not_the_ceiling(broker: RunningBroker) -> None:
    agent = broker.register(
        ["read:tickets:4711"], launch_token=broker.launch_token(["read:tickets:*"])
    )
    assert jwt_parts(agent.access_token)[1]["scope"] == "read:tickets:4711"


def test_an_app_cannot_launch_beyond_its_own_ceiling(broker: RunningBroker) -> None:
    app = broker.create_app(["read:tickets:*"])
    app_token = broker.app_token(app)
    for wider in (["write:tickets:1"], ["read:payments:*"], ["admin:revoke:*"]):
        resp = broker.post(
            "/v1/app/launch-tokens",
            json={"agent_name": "greedy", "allowed_scope": wider},
            headers=bearer(app_token),
        )
        refused(broker, resp, 403, "forbidden", "ceiling")
    # Within its ceiling the app launches, and its agent is held to the launch token.
    launch = broker.launch_token(
        ["read:tickets:42"], bearer=app_token, route="/v1/app/launch-tokens"
    )
    body, _ = broker.register_body(launch, ["read:tickets:*"])
    refused(broker, broker.post("/v1/register", json=body), 403, "scope_violation")


def test_an_agent_token_cannot_mint_launch_tokens(broker: RunningBroker) -> None:
    agent = broker.register(CEILING, launch_token=broker.launch_token(CEILING))
    for route in ("/v1/admin/launch-tokens", "/v1/app/launch-tokens"):
        resp = broker.post(
            route,
            json={"agent_name": "self-service", "allowed_scope": ["read:*:*"]},
            headers=bearer(agent.access_token),
        )
        refused(broker, resp, 403, "insufficient_scope")


def test_narrowing_an_app_holds_the_launch_tokens_it_made_before(broker: RunningBroker) -> None:
    # TM-05: requested ⊆ launch token ⊆ the app's scopes *as they are now*. A multi-use
    # launch token made while the app could pay launches no payer once it cannot.
    app = broker.create_app(["read:tickets:*", "write:payments:*"])
    launch = broker.launch_token(
        ["read:tickets:*", "write:payments:*"],
        bearer=broker.app_token(app),
        route="/v1/app/launch-tokens",
        single_use=False,
    )
    broker.register(["write:payments:1"], launch_token=launch)
    resp = broker.client.put(
        f"/v1/admin/apps/{app['app_id']}",
        json={"scopes": ["read:tickets:*"]},
        headers=broker.admin_headers(),
    )
    assert resp.status_code == 200, resp.text
    body, _ = broker.register_body(launch, ["write:payments:1"])
    event = refused(broker, broker.post("/v1/register", json=body), 403, "scope_violation")
    assert event["event_type"] == "registration_policy_violation"
    # Nothing was consumed, and within the app's ceiling the launch token still works.
    agent = broker.register(["read:tickets:42"], launch_token=launch)
    assert jwt_parts(agent.access_token)[1]["scope"] == "read:tickets:42"
