# Would fail if: a lifecycle transition of an agent, its tokens or its grants (renewal,
# release, resumption, delegation, an app's removal or re-keying, a revocation at any
# level, a spent max_calls) gave back authority the documented rules say is gone.
"""Lifecycle transitions against a real broker process, over HTTP.

Every state an agent and its tokens pass through (registered, renewed, delegated,
released, resumed, done, revoked at token/agent/task level, its app re-keyed or removed,
a counted grant spent) and the transitions out of it that must stay closed: what the
docs say ends an authority stays ended (docs/authority.md, docs/agents.md, docs/api.md).
"""

from __future__ import annotations

import secrets
import time

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import Agent, RunningBroker, b64, jwt_parts

from tasklease.rules.messages import heartbeat_signing_input

SCOPE = ["read:data:*"]
COUNTED = {
    "type": "resource_access",
    "actions": ["read"],
    "locations": ["https://rs.example/"],
    "limits": {"max_calls": 2},
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _renew(broker: RunningBroker, token: str) -> httpx.Response:
    return broker.post("/v1/token/renew", headers=_bearer(token))


def _release(broker: RunningBroker, token: str) -> httpx.Response:
    return broker.post("/v1/token/release", headers=_bearer(token))


def _resume(
    broker: RunningBroker, agent: Agent, key: Ed25519PrivateKey | None = None
) -> httpx.Response:
    nonce = broker.nonce()
    signer = key or agent.key
    body = {
        "agent_id": agent.agent_id,
        "nonce": nonce,
        "signature": b64(signer.sign(bytes.fromhex(nonce))),
    }
    return broker.post("/v1/resume", json=body)


def _jti(broker: RunningBroker, token: str) -> str:
    claims = broker.validate(token)
    assert claims["valid"], claims
    return str(claims["claims"]["jti"])


def _heartbeat(broker: RunningBroker, agent: Agent, token: str, *, done: bool) -> httpx.Response:
    now, proof = int(time.time()), secrets.token_hex(12)
    message = heartbeat_signing_input(agent.agent_id, _jti(broker, token), now, proof, done)
    body = {"timestamp": now, "jti": proof, "signature": b64(agent.key.sign(message)), "done": done}
    return broker.post("/v1/heartbeat", json=body, headers=_bearer(token))


def _count(broker: RunningBroker, token: str) -> httpx.Response:
    body = {"token": token, "type": "resource_access", "action": "read",
            "location": "https://rs.example/x"}  # fmt: skip
    return broker.post("/v1/token/calls", json=body)


def _refused(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json().get("denial_id", "").startswith("den_"), resp.text


def test_renew_release_and_the_tokens_that_are_gone(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE)
    renewed = _renew(broker, agent.access_token)
    assert renewed.status_code == 200, renewed.text
    successor = renewed.json()["access_token"]
    assert _renew(broker, agent.access_token).status_code == 401  # renewed once only
    assert _release(broker, successor).status_code == 204
    assert not broker.is_valid(successor)
    assert _renew(broker, successor).status_code == 401  # renew after release
    assert _release(broker, successor).status_code == 401  # the released token is no key
    # A release ends the token, not the agent: it may resume by key (docs/agents.md 5).
    resumed = _resume(broker, agent)
    assert resumed.status_code == 200, resumed.text
    # ... but never with another key.
    _refused(_resume(broker, agent, Ed25519PrivateKey.generate()), 401)


def test_a_released_parent_takes_its_delegations_and_their_renewals(broker: RunningBroker) -> None:
    giver, taker = broker.register(SCOPE), broker.register(SCOPE)
    handed = broker.delegate(giver.access_token, taker.agent_id, ["read:data:one"])
    assert handed.status_code == 200, handed.text
    child = handed.json()["access_token"]
    grandchild = _renew(broker, child)
    assert grandchild.status_code == 200, grandchild.text
    # A renewal of the child never outlives the token it was delegated from.
    child_exp = jwt_parts(grandchild.json()["access_token"])[1]["exp"]
    assert child_exp <= jwt_parts(giver.access_token)[1]["exp"]
    parent = _renew(broker, giver.access_token).json()["access_token"]
    assert _release(broker, parent).status_code == 204
    for token in (child, grandchild.json()["access_token"]):
        assert not broker.is_valid(token)
        assert _renew(broker, token).status_code == 401


def test_done_ends_every_way_back(broker: RunningBroker) -> None:
    agent, other = broker.register(SCOPE), broker.register(SCOPE)
    second = _resume(broker, agent).json()["access_token"]  # a second live token
    assert _heartbeat(broker, agent, agent.access_token, done=True).status_code == 200
    assert not broker.is_valid(agent.access_token)
    _refused(_renew(broker, second), 403)
    _refused(_resume(broker, agent), 403)
    _refused(broker.delegate(second, other.agent_id, ["read:data:one"]), 401)
    _refused(broker.delegate(other.access_token, agent.agent_id, ["read:data:one"]), 404)
    _refused(_heartbeat(broker, agent, second, done=False), 403)


def test_revocation_at_agent_and_task_level_ends_resumption(broker: RunningBroker) -> None:
    by_agent, by_task = broker.register(SCOPE), broker.register(SCOPE)
    assert broker.revoke("agent", by_agent.agent_id).status_code == 200
    assert broker.revoke("task", by_task.task_id).status_code == 200
    for agent in (by_agent, by_task):
        assert not broker.is_valid(agent.access_token)
        _refused(_resume(broker, agent), 403)


def test_an_apps_agents_after_its_secret_is_rotated_and_after_it_is_removed(
    broker: RunningBroker,
) -> None:
    app = broker.create_app(SCOPE)
    lt = broker.launch_token(SCOPE, bearer=broker.app_token(app), route="/v1/app/launch-tokens")
    agent = broker.register(SCOPE, launch_token=lt)
    rotated = broker.post(
        f"/v1/admin/apps/{app['app_id']}/rotate-secret", headers=broker.admin_headers()
    )
    assert rotated.status_code == 200, rotated.text
    # Its agents keep theirs (docs/authority.md): renewal and resumption go on.
    renewed = _renew(broker, agent.access_token)
    assert renewed.status_code == 200, renewed.text
    resumed = _resume(broker, agent)
    assert resumed.status_code == 200, resumed.text
    removed = broker.client.delete(
        f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers()
    )
    assert removed.status_code == 200, removed.text
    for token in (renewed.json()["access_token"], resumed.json()["access_token"]):
        assert not broker.is_valid(token)
        assert _renew(broker, token).status_code == 401
    _refused(_resume(broker, agent), 403)


def test_a_spent_max_calls_stays_spent_across_renewal_resumption_and_delegation(
    broker: RunningBroker,
) -> None:
    lt = broker.launch_token([], authorization_details=[COUNTED], single_use=False, max_uses=2)
    agents = []
    for _ in range(2):
        body, key = broker.register_body(lt, [])
        body["authorization_details"] = [COUNTED]
        del body["requested_scope"]
        resp = broker.post("/v1/register", json=body)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        agents.append(Agent(data["agent_id"], data["access_token"], data["expires_in"], key,
                            body["orch_id"], body["task_id"], []))  # fmt: skip
    giver, taker = agents
    handed = broker.post(
        "/v1/delegate",
        json={"delegate_to": taker.agent_id, "authorization_details": [COUNTED]},
        headers=_bearer(giver.access_token),
    )
    assert handed.status_code == 200, handed.text
    child = handed.json()["access_token"]
    assert [_count(broker, child).json()["remaining"] for _ in range(2)] == [1, 0]
    child_renewed = _renew(broker, child).json()["access_token"]
    _refused(_count(broker, child_renewed), 403)
    # The giver's own budget paid for them: its renewal and resumption find it spent.
    renewed = _renew(broker, giver.access_token).json()["access_token"]
    _refused(_count(broker, renewed), 403)
    resumed = _resume(broker, giver).json()["access_token"]
    _refused(_count(broker, resumed), 403)
    again = broker.post(
        "/v1/delegate",
        json={"delegate_to": taker.agent_id, "authorization_details": [COUNTED]},
        headers=_bearer(resumed),
    )
    assert again.status_code == 200, again.text
    _refused(_count(broker, again.json()["access_token"]), 403)


def test_a_holder_cannot_end_another_agents_token(broker: RunningBroker) -> None:
    mine, theirs = broker.register(SCOPE), broker.register(SCOPE)
    resp = broker.post(
        "/v1/token/revoke", json={"token": theirs.access_token}, headers=_bearer(mine.access_token)
    )
    _refused(resp, 403)
    assert broker.is_valid(theirs.access_token)


def test_resumption_switched_off_by_the_launch_token(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE, allow_resume=False)
    _refused(_resume(broker, agent), 403)
