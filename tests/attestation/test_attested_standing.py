"""An attested agent stands on its attestation as a holder too, not only as a presenter.

Revoking ``attest:<type>:<attestor>:<subject>`` at level ``chain`` (the documented way to
end what an attestor registered, docs/attestation.md) must end what was delegated to the
agents it registered, and keep them from being handed anything more.

Would fail if: the agent's standing were matched against its app alone (a delegation to
an agent whose attestation was revoked went through), or a token delegated to an attested
agent did not list the attestation (it outlived the revocation), or an unreadable
attestation record were read as no attestation, or the standing ended at the broker-wide
renewal ceiling rather than at the registration's own (an attestation policy's
``lifetime``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_support import CTX, START, admin, make_broker, register, valid
from issuers import SigningKey, k8s_claims, mint

from tasklease.core.broker import Broker
from tasklease.core.errors import NotFound
from tasklease.core.lineage import agent_lineage
from tasklease.core.records import AgentRecord
from tasklease.core.store import AuditQuery

K8S_ISS = "https://kubernetes.default.svc.cluster.local"
ISSUER = "https://broker.example"
POLICY = [
    # Billing pods' registrations last 300 s at most, renewals included.
    {
        "match": {"namespace": "billing"},
        "scope": ["read:invoices:*", "read:metrics:*"],
        "lifetime": 300,
    },
    {"match": {"namespace": "ops"}, "scope": ["read:metrics:*"]},
]


def attested_broker() -> tuple[Broker, SigningKey]:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    settings = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]})}
    broker.attestation.add(
        admin(broker), name="prod", type="k8s_sat", settings=settings, policy=POLICY, ctx=CTX
    )
    return broker, key


def evidence(key: SigningKey, namespace: str, now: float = START) -> dict[str, str]:
    claims = k8s_claims(K8S_ISS, ISSUER, now, namespace=namespace)
    return {"type": "k8s_sat", "evidence": mint(key, claims)}


def audit_details(broker: Broker, kind: str) -> list[str]:
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    return [e.detail for e in events if kind in e.event_type]


def test_revoking_an_attestation_ends_what_was_delegated_to_its_agents() -> None:
    broker, key = attested_broker()
    lead = register(broker, ["read:metrics:*"], attestation=evidence(key, "ops"))
    helper = register(
        broker, ["read:invoices:1"], attestation=evidence(key, "billing"), task="t-billing"
    )
    [ancestor] = [a for a in helper.claims.lineage if a.startswith("attest:")]
    handed = broker.delegate(
        lead.claims, delegate_to=helper.claims.sub, scope=["read:metrics:cpu"], ttl=60, ctx=CTX
    )
    assert ancestor in handed.claims.lineage  # the holder's attestation, listed
    assert valid(broker, handed.token)

    broker.revoke(admin(broker), level="chain", target=ancestor, ctx=CTX)
    assert not valid(broker, helper.token)
    assert not valid(broker, handed.token)  # handed over before the revocation: ended too
    assert valid(broker, lead.token)  # another attestation's agent is untouched
    with pytest.raises(NotFound):  # a dead delegate looks like an unknown one
        broker.delegate(
            lead.claims, delegate_to=helper.claims.sub, scope=["read:metrics:cpu"], ttl=60, ctx=CTX
        )
    assert "revoked at level chain" in " ".join(audit_details(broker, "delegation"))


def test_an_agent_past_its_attested_lifetime_is_handed_nothing() -> None:
    broker, key = attested_broker()
    helper = register(
        broker, ["read:invoices:1"], attestation=evidence(key, "billing"), task="t-billing"
    )
    assert helper.claims.max_exp == int(START) + 300  # the policy's lifetime
    assert broker.store.get_agent(helper.claims.sub).ceiling == int(START) + 300
    broker.clock.advance(299)
    lead = register(broker, ["read:metrics:*"], attestation=evidence(key, "ops", START + 299))
    broker.delegate(
        lead.claims, delegate_to=helper.claims.sub, scope=["read:metrics:cpu"], ttl=60, ctx=CTX
    )  # within its lifetime: handed on
    broker.clock.advance(1)
    # Its registration is over (the broker-wide renewal ceiling is an hour away): what a
    # delegation would hand it would outlive the registration it stands on.
    with pytest.raises(NotFound):
        broker.delegate(
            lead.claims, delegate_to=helper.claims.sub, scope=["read:metrics:cpu"], ttl=60, ctx=CTX
        )
    assert "past its lifetime ceiling" in " ".join(audit_details(broker, "delegation"))


def _agent(**fields: Any) -> AgentRecord:
    base: dict[str, Any] = {
        "agent_id": "spiffe://broker.example/agent/orch-1/task-1/a1",
        "public_key": bytes(32),
        "orch_id": "orch-1",
        "task_id": "task-1",
        "scope": (),
        "app_id": "",
        "client_id": "",
        "registered_at": START,
    }
    return AgentRecord(**{**base, **fields})


def test_an_agents_lineage_is_its_app_and_its_attestation() -> None:
    claim = {"type": "k8s_sat", "attestor": "prod", "sub": "system:serviceaccount:billing:api"}
    assert agent_lineage(_agent()) == ()
    assert agent_lineage(_agent(app_id="a1", attest=json.dumps(claim))) == (
        "app:a1",
        "attest:k8s_sat:prod:system:serviceaccount:billing:api",
    )
    # An attestation record that cannot be read is no attestation to skip: the agent
    # stands on nothing known, and is in no good standing.
    for broken in ("{", '{"type": "K8S!"}', '"k8s_sat"'):
        assert agent_lineage(_agent(attest=broken)) is None
