"""A refused registration's or resumption's proof of possession is spent with the refusal.

Registration and resumption prove the agent's key by signing the same bytes, the
challenge nonce (AgentWrit's rule for registration). Whoever sees a refused request's
body (a proxy or a log that keeps bodies) holds a signature over a live nonce by the
agent's key; while the nonce lives, it must neither resume the agent nor register
(decision 262). Against a real broker process on SQLite, over loopback HTTP.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import SHARED_ENV, RunningBroker, dpop_proof, launch_broker, stop_broker

pytestmark = pytest.mark.slow


def one_event(broker: RunningBroker, answer: httpx.Response) -> dict[str, Any]:
    denial = answer.json()["denial_id"]
    found = broker.get(
        "/v1/audit/events?outcome=denied&limit=1000", headers=broker.admin_headers()
    ).json()["events"]
    hits = [e for e in found if e["detail"].endswith(f"denial={denial}")]
    assert len(hits) == 1, answer.text
    return hits[0]


def registered(broker: RunningBroker, key: Ed25519PrivateKey, **launch: Any) -> str:
    body, _ = broker.register_body(
        broker.launch_token(["read:data:*"], **launch), ["read:data:x"], key=key
    )
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["agent_id"])


def resumed(broker: RunningBroker, agent_id: str, body: dict[str, Any]) -> httpx.Response:
    return broker.post(
        "/v1/resume",
        json={"agent_id": agent_id, "nonce": body["nonce"], "signature": body["signature"]},
    )


@pytest.mark.parametrize("refusal", ["above_ceiling", "launch_token_used", "malformed_field"])
def test_a_refused_registrations_signature_resumes_no_agent(
    broker: RunningBroker, refusal: str
) -> None:
    key = Ed25519PrivateKey.generate()
    agent_id = registered(broker, key)  # the agent, registered before with this key
    launch = broker.launch_token(["read:data:*"])
    body, _ = broker.register_body(launch, ["read:data:x"], key=key)
    if refusal == "above_ceiling":
        body["requested_scope"] = ["write:data:x"]
    elif refusal == "launch_token_used":
        assert broker.register(["read:data:x"], launch_token=launch)  # spent by another
    else:
        body["orch_id"] = "not a segment/"
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == {"above_ceiling": 403, "launch_token_used": 401}.get(
        refusal, 400
    ), answer.text
    if refusal != "malformed_field":  # a malformed request is not audited
        one_event(broker, answer)

    # Whoever saw the refused request, without the agent's key:
    replayed = resumed(broker, agent_id, body)
    assert replayed.status_code == 401, replayed.text
    assert "nonce" in one_event(broker, replayed)["detail"]


def test_a_refused_resumptions_signature_registers_nothing(broker: RunningBroker) -> None:
    key = Ed25519PrivateKey.generate()
    agent_id = registered(broker, key, allow_resume=False)
    body, _ = broker.register_body(broker.launch_token(["read:data:*"]), ["read:data:x"], key=key)
    refused = resumed(broker, agent_id, body)  # resumption switched off for this agent
    assert refused.status_code == 403, refused.text
    one_event(broker, refused)

    replayed = broker.post("/v1/register", json=body)
    assert replayed.status_code == 401, replayed.text
    assert "nonce" in one_event(broker, replayed)["detail"]


def test_a_fresh_nonce_still_resumes_the_agent(broker: RunningBroker) -> None:
    """Spending a refused request's nonce costs the agent nothing: the next one works."""
    key = Ed25519PrivateKey.generate()
    agent_id = registered(broker, key)
    body, _ = broker.register_body(broker.launch_token(["read:data:*"]), ["write:data:x"], key=key)
    assert broker.post("/v1/register", json=body).status_code == 403
    fresh, _ = broker.register_body("unused", ["read:data:x"], key=key)
    answer = resumed(broker, agent_id, fresh)
    assert answer.status_code == 200, answer.text


def test_an_answer_asking_for_the_same_request_again_keeps_the_nonce_for_registration(
    broker: RunningBroker,
) -> None:
    """A task revoked moments ago answers 503 with ``Retry-After``: the SDK sends the
    same body again, so its nonce stays live for registration (decision 262), and for
    registration only: its signature resumes no agent (decision 268)."""
    admin = broker.admin_headers()
    key = Ed25519PrivateKey.generate()
    agent_id = registered(broker, key)  # the agent, registered before with this key
    first, _ = broker.register_body(broker.launch_token(["read:data:*"]), ["read:data:x"])
    assert broker.post("/v1/register", json=first).status_code == 200
    revoked = broker.post(
        "/v1/revoke", headers=admin, json={"level": "task", "target": first["task_id"]}
    )
    assert revoked.status_code == 200, revoked.text
    body, _ = broker.register_body(
        broker.launch_token(["read:data:*"]), ["read:data:x"], key=key, task_id=first["task_id"]
    )
    soon = broker.post("/v1/register", json=body)
    assert soon.status_code == 503 and "Retry-After" in soon.headers, soon.text
    one_event(broker, soon)

    replayed = resumed(broker, agent_id, body)  # whoever saw the body, without the key
    assert replayed.status_code == 401, replayed.text
    assert "asked to come again" in one_event(broker, replayed)["detail"]

    body["task_id"] = "task-another-run"  # the same nonce and signature, another task
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text


def test_a_registration_asked_for_a_dpop_nonce_resumes_no_agent(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With DPoP nonces required, a registration without one is 400 ``use_dpop_nonce``
    and the client sends the same body again with a proof carrying it: that body's
    signature must not resume the agent registered before with the key (decision 268)."""
    running = launch_broker(
        tmp_path_factory.mktemp("dpop-nonce-broker"),
        {**SHARED_ENV, "TASKLEASE_DPOP_NONCE": "required"},
    )
    try:
        key = Ed25519PrivateKey.generate()
        agent_id = registered(running, key)
        body, _ = running.register_body(
            running.launch_token(["read:data:*"]), ["read:data:x"], key=key
        )
        htu = f"{running.url}/v1/register"
        asked = running.post(
            "/v1/register", json=body, headers={"DPoP": dpop_proof(key, "POST", htu)}
        )
        assert asked.status_code == 400 and asked.json()["error"] == "use_dpop_nonce", asked.text

        replayed = resumed(running, agent_id, body)
        assert replayed.status_code == 401, replayed.text
        assert "asked to come again" in one_event(running, replayed)["detail"]

        proof = dpop_proof(key, "POST", htu, nonce=asked.headers["DPoP-Nonce"])
        answer = running.post("/v1/register", json=body, headers={"DPoP": proof})
        assert answer.status_code == 200, answer.text
        assert answer.json()["token_type"] == "DPoP"
    finally:
        stop_broker(running)
