"""The authority kernel's promises over real HTTP, as an operator and an agent meet them."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts


def _refused_with_denial(resp: Any, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["denial_id"].startswith("den_"), resp.text


def test_principal_given_on_a_launch_token_reaches_the_agents_tokens(
    broker: RunningBroker,
) -> None:
    scope = ["read:data:*"]
    lt = broker.launch_token(scope, principal="user:alice@example.com", single_use=False, ttl=60)
    a = broker.register(scope, launch_token=lt)
    b = broker.register(scope, launch_token=lt)
    _, claims = jwt_parts(a.access_token)
    assert claims["principal"] == "user:alice@example.com"
    resp = broker.delegate(a.access_token, b.agent_id, ["read:data:1"])
    assert resp.status_code == 200, resp.text
    _, delegated = jwt_parts(resp.json()["access_token"])
    assert delegated["principal"] == "user:alice@example.com"
    # RFC 8693 section 4.1: A is the subject, B (the holder) the current actor.
    assert delegated["sub"] == a.agent_id and delegated["act"] == {"sub": b.agent_id}


def test_removed_app_cannot_launch_and_its_agents_stop(broker: RunningBroker) -> None:
    scope = ["read:data:*"]
    app = broker.create_app(scope)
    lt = broker.launch_token(
        scope, bearer=broker.app_token(app), route="/v1/app/launch-tokens", single_use=False
    )
    running = broker.register(scope, launch_token=lt)
    assert broker.is_valid(running.access_token)
    resp = broker.client.delete(f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers())
    assert resp.status_code in (200, 204), resp.text
    body, _ = broker.register_body(lt, scope)
    _refused_with_denial(broker.post("/v1/register", json=body), 401)
    assert not broker.is_valid(running.access_token)


def test_self_delegation_is_refused_with_a_denial_id(broker: RunningBroker) -> None:
    a = broker.register(["read:data:*"])
    _refused_with_denial(broker.delegate(a.access_token, a.agent_id, ["read:data:*"]), 403)


def test_released_token_takes_its_delegations_with_it(broker: RunningBroker) -> None:
    scope = ["read:data:*"]
    lt = broker.launch_token(scope, single_use=False, ttl=60)
    a = broker.register(scope, launch_token=lt)
    b = broker.register(scope, launch_token=lt)
    resp = broker.delegate(a.access_token, b.agent_id, scope)
    delegated = resp.json()["access_token"]
    assert broker.is_valid(delegated)
    resp = broker.post("/v1/token/release", headers=a.bearer)
    assert resp.status_code == 204, resp.text
    assert not broker.is_valid(delegated)


def test_a_by_reference_token_is_refused_as_a_revocation_target(broker: RunningBroker) -> None:
    secret = "tlr_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    resp = broker.revoke("token", secret)
    assert resp.status_code == 400, resp.text
    assert secret not in resp.text
    events = broker.get("/v1/audit/events?limit=200", headers=broker.admin_headers())
    assert secret not in events.text


@pytest.mark.parametrize("level", ["token", "agent", "task", "chain"])
def test_a_launch_token_or_client_secret_is_refused_as_a_revocation_target(
    broker: RunningBroker, level: str
) -> None:
    """Pasted as a target (to end a leaked one), a secret would be stored and published on
    the revocation feed, and end nothing: refused, at every level."""
    app = broker.create_app(["read:data:*"])
    for secret in (broker.launch_token(["read:data:*"], ttl=600), app["client_secret"]):
        resp = broker.revoke(level, secret)
        assert resp.status_code == 400, resp.text
        assert "must not hold a secret" in resp.json()["detail"] and secret not in resp.text
        feed = broker.get(
            "/v1/revocations", headers={"Authorization": f"Bearer {broker.app_token(app)}"}
        )
        assert feed.status_code == 200 and secret not in feed.text


def test_bit_flipped_nonce_at_registration_is_audited(broker: RunningBroker) -> None:
    scope = ["read:data:*"]
    nonce = broker.nonce()
    flipped = format(int(nonce, 16) ^ 1, "064x")
    body, _ = broker.register_body(broker.launch_token(scope), scope, nonce=flipped)
    resp = broker.post("/v1/register", json=body)
    _refused_with_denial(resp, 401)
    denial = resp.json()["denial_id"]
    events = broker.get(
        "/v1/audit/events?outcome=denied&limit=200", headers=broker.admin_headers()
    ).json()
    assert sum(denial in e["detail"] for e in events["events"]) == 1
