# Would fail if: the issuance check stopped capping a delegated token's `exp` (and the
# `max_exp` its renewals keep to) at its parent token's `exp`, or ending a token stopped
# ending what was delegated from it and from its renewals.
"""TM-23 — delegated authority outliving its source: a delegate asks for a long lifetime,
renews its delegated token past its delegator's, or keeps working after the delegator's
token, agent or app has ended.

A delegated token never lives past the token it came from, renewals included; ending a
token (release, revocation) ends what was delegated from it and from any renewal of it;
removing an app ends every token that descends from its agents, delegations included.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import bearer, refused

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


def _delegate(broker: RunningBroker, token: str, to: Any, **extra: Any) -> str:
    resp = broker.delegate(token, to.agent_id, ["read:tickets:1"], **extra)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _dead(broker: RunningBroker, token: str) -> None:
    resp = broker.post("/v1/token/renew", headers=bearer(token))
    refused(broker, resp, 401, "unauthorized")
    assert not broker.is_valid(token)


def test_a_delegated_token_and_its_renewals_end_with_the_parent(broker: RunningBroker) -> None:
    # A short-lived parent: its launch token caps its agent's tokens at 30 s.
    parent = broker.register(SCOPE, launch_token=broker.launch_token(SCOPE, max_ttl=30))
    helper = broker.register(SCOPE)
    parent_exp = jwt_parts(parent.access_token)[1]["exp"]
    child = _delegate(broker, parent.access_token, helper, ttl=3600)
    claims = jwt_parts(child)[1]
    assert claims["exp"] <= parent_exp and claims["max_exp"] <= parent_exp
    token = child
    for _ in range(3):
        resp = broker.post("/v1/token/renew", headers=bearer(token))
        assert resp.status_code == 200, resp.text
        token = resp.json()["access_token"]
        assert jwt_parts(token)[1]["exp"] <= parent_exp


def test_releasing_a_renewed_parent_ends_what_it_delegated_before(
    broker: RunningBroker,
) -> None:
    parent, helper = broker.register(SCOPE), broker.register(SCOPE)
    child = _delegate(broker, parent.access_token, helper)
    renewed = broker.post("/v1/token/renew", headers=parent.bearer).json()["access_token"]
    assert broker.is_valid(child)  # a renewal is not an ending...
    released = broker.post("/v1/token/release", headers=bearer(renewed))
    assert released.status_code == 204, released.text
    _dead(broker, child)  # ...but the release of the renewed grant is


def test_a_grandchild_ends_with_the_root(broker: RunningBroker) -> None:
    root, middle, leaf = (broker.register(SCOPE) for _ in range(3))
    hop = _delegate(broker, root.access_token, middle)
    grandchild = _delegate(broker, hop, leaf)
    revoked = broker.revoke("token", jwt_parts(root.access_token)[1]["jti"])
    assert revoked.status_code == 200, revoked.text
    _dead(broker, hop)
    _dead(broker, grandchild)
    assert broker.is_valid(middle.access_token) and broker.is_valid(leaf.access_token)


def test_removing_an_app_ends_what_its_agents_delegated(broker: RunningBroker) -> None:
    app = broker.create_app(SCOPE)
    app_token = broker.app_token(app)
    launch = broker.launch_token(SCOPE, bearer=app_token, route="/v1/app/launch-tokens")
    appagent = broker.register(SCOPE, launch_token=launch)
    outsider = broker.register(SCOPE)  # launched by the operator, not by the app
    child = _delegate(broker, appagent.access_token, outsider)
    removed = broker.client.delete(
        f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers()
    )
    assert removed.status_code == 200, removed.text
    _dead(broker, appagent.access_token)
    _dead(broker, child)
    assert broker.is_valid(outsider.access_token)
