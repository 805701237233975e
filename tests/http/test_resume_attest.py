"""A resumption is the same lineage as the registration it resumes: its token carries the
registration's ``attest`` claim (what the agent declared of itself), as renewals and
delegations do. It used to be dropped, so a resource server reading ``attest`` saw a
resumed agent as one that had declared nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker

DECLARED = {"model": "acme/planner/4", "runtime": "sha256:" + "cd" * 32, "sdk": "custom/2"}


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    value: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return value


def _resume(broker: RunningBroker, agent_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    nonce = broker.nonce()
    signature = base64.b64encode(key.sign(bytes.fromhex(nonce))).decode()
    resp = broker.post(
        "/v1/resume", json={"agent_id": agent_id, "nonce": nonce, "signature": signature}
    )
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_a_resumed_token_keeps_what_the_agent_declared(broker: RunningBroker) -> None:
    scope = ["read:data:*"]
    body, key = broker.register_body(broker.launch_token(scope), scope)
    resp = broker.post("/v1/register", json={**body, "declared": DECLARED})
    assert resp.status_code == 200, resp.text
    registered = _claims(resp.json()["access_token"])
    assert registered["attest"] == {"type": "launch_token", "declared": DECLARED}

    resumed = _resume(broker, resp.json()["agent_id"], key)
    claims = _claims(resumed["access_token"])
    assert claims["attest"] == registered["attest"]
    assert claims["rnc"] == 1 and claims["oiat"] == registered["oiat"]
    # And what descends from the resumed token carries it on.
    renewed = broker.post(
        "/v1/token/renew", headers={"Authorization": f"Bearer {resumed['access_token']}"}
    )
    assert renewed.status_code == 200, renewed.text
    assert _claims(renewed.json()["access_token"])["attest"] == registered["attest"]


def test_an_agent_that_declared_nothing_resumes_without_a_claim(broker: RunningBroker) -> None:
    scope = ["read:data:*"]
    body, key = broker.register_body(broker.launch_token(scope), scope)
    resp = broker.post("/v1/register", json=body)
    assert resp.status_code == 200, resp.text
    assert "attest" not in _claims(resp.json()["access_token"])
    resumed = _resume(broker, resp.json()["agent_id"], key)
    assert "attest" not in _claims(resumed["access_token"])
