# Would fail if: registration (or resumption) stopped verifying the nonce signature
# with the presented (or registered) Ed25519 key, so holding a launch token or knowing
# an agent ID were enough to obtain its identity.
"""TM-04 — impostor registration or resumption: credentials without proof of possession.

Registering takes a launch token *and* a signature over a fresh broker nonce by the key
being registered; resuming takes a signature by the key registered before. An attacker
who copies a launch token or learns an agent's SPIFFE ID (they appear in tokens, audit
events and discovery answers) but not its private key gets nothing, and the refusal is
audited; the genuine agent is not locked out by the attempt.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker, b64
from threat_support import audit_events, raw_public_key, refused, resume_body

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


def test_a_signature_by_another_key_registers_nobody(broker: RunningBroker) -> None:
    launch = broker.launch_token(SCOPE)
    victim_key = Ed25519PrivateKey.generate()
    attacker_key = Ed25519PrivateKey.generate()
    body, _ = broker.register_body(launch, SCOPE, key=victim_key, orch_id="orch-impostor")
    nonce = body["nonce"]
    body["signature"] = b64(attacker_key.sign(bytes.fromhex(nonce)))
    refused(broker, broker.post("/v1/register", json=body), 401, "unauthorized", "signature")
    # The nonce is spent, so the same request cannot be retried with a better guess...
    body["signature"] = b64(victim_key.sign(bytes.fromhex(nonce)))
    refused(broker, broker.post("/v1/register", json=body), 401, "unauthorized", "nonce")
    # ...but the launch token is not: the genuine agent still registers with it.
    genuine = broker.register(SCOPE, launch_token=launch)
    assert broker.is_valid(genuine.access_token)
    assert not [
        e
        for e in audit_events(broker, event_type="agent_registered")
        if "orch-impostor" in e["agent_id"]
    ]


def test_a_signature_over_another_nonce_is_refused(broker: RunningBroker) -> None:
    key = Ed25519PrivateKey.generate()
    launch = broker.launch_token(SCOPE)
    old_nonce = broker.nonce()
    body, _ = broker.register_body(launch, SCOPE, key=key)
    # A captured signature over some other nonce, presented with a fresh one.
    body["signature"] = b64(key.sign(bytes.fromhex(old_nonce)))
    refused(broker, broker.post("/v1/register", json=body), 401, "unauthorized", "signature")
    # Signing the nonce's hex text instead of its bytes is not the proof either.
    body, _ = broker.register_body(launch, SCOPE, key=key)
    body["signature"] = b64(key.sign(body["nonce"].encode()))
    refused(broker, broker.post("/v1/register", json=body), 401, "unauthorized", "signature")


def test_a_public_key_that_is_not_ed25519_sized_consumes_nothing(broker: RunningBroker) -> None:
    launch = broker.launch_token(SCOPE)
    body, key = broker.register_body(launch, SCOPE)
    body["public_key"] = b64(raw_public_key(key) + b"\x00")
    resp = broker.post("/v1/register", json=body)
    assert resp.status_code == 400, resp.text
    assert "access_token" not in resp.json()
    broker.register(SCOPE, launch_token=launch)  # still unconsumed


def test_an_impostor_cannot_resume_someone_elses_identity(broker: RunningBroker) -> None:
    victim = broker.register(SCOPE)
    attacker_key = Ed25519PrivateKey.generate()
    event = refused(
        broker,
        broker.post("/v1/resume", json=resume_body(broker, victim.agent_id, attacker_key)),
        401,
        "unauthorized",
    )
    assert event["event_type"] == "agent_resume_denied"
    assert "impostor" in event["detail"]
    # The real holder of the registered key resumes the same identity.
    genuine = broker.post("/v1/resume", json=resume_body(broker, victim.agent_id, victim.key))
    assert genuine.status_code == 200, genuine.text
    assert genuine.json()["agent_id"] == victim.agent_id


def test_an_unknown_agent_id_resumes_nothing(broker: RunningBroker) -> None:
    key = Ed25519PrivateKey.generate()
    invented = "spiffe://tasklease.local/agent/orch-x/task-x/0123456789abcdef"
    resp = broker.post("/v1/resume", json=resume_body(broker, invented, key))
    refused(broker, resp, 401, "unauthorized")
