"""An agent registered with a JWT-SVID checked against a federated domain's bundle (a
``jwt_svid`` attestor with ``"federation": true``) is derived from that domain.

Removing the domain (docs/federation.md) ends everything derived from it in the same
write: the chain revocation of ``fed:<domain>`` it writes must reach these agents, their
renewals and what they delegated, and the re-declaration lockout covers them too.

Would fail if: the registration's lineage did not list ``fed:<domain>`` (the agent kept a
valid, renewable token after the removal), or a token renewed or delegated from it lost
the entry.
"""

from __future__ import annotations

import pytest
from core_support import CTX, START, admin, make_broker, register, valid
from issuers import SigningKey, mint, spiffe_bundle, svid_claims

from tasklease.core.broker import Broker
from tasklease.core.errors import Conflict, TaskleaseError
from tasklease.core.foreign import domain_entry

ISSUER = "https://broker.example"
DOMAIN = "partner.example"
POLICY = [{"match": {}, "scope": ["read:shared:*"]}]


def federated_broker() -> tuple[Broker, SigningKey]:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    broker.federation.add(admin(broker), trust_domain=DOMAIN, bundle=spiffe_bundle(key), ctx=CTX)
    settings = {"trust_domain": DOMAIN, "federation": True}
    broker.attestation.add(
        admin(broker), name="partner", type="jwt_svid", settings=settings, policy=POLICY, ctx=CTX
    )
    return broker, key


def evidence(key: SigningKey, workload: str) -> dict[str, str]:
    claims = svid_claims(f"spiffe://{DOMAIN}/{workload}", ISSUER, START)
    return {"type": "jwt_svid", "evidence": mint(key, claims)}


def test_removing_a_federation_ends_agents_registered_with_its_svids() -> None:
    broker, key = federated_broker()
    lead = register(broker, ["read:shared:*"], attestation=evidence(key, "lead"))
    helper = register(broker, ["read:shared:1"], attestation=evidence(key, "helper"), task="t2")
    assert domain_entry(DOMAIN) in lead.claims.lineage
    renewed = broker.renew(lead.claims, CTX)
    handed = broker.delegate(
        renewed.claims, delegate_to=helper.claims.sub, scope=["read:shared:1"], ttl=60, ctx=CTX
    )
    assert domain_entry(DOMAIN) in renewed.claims.lineage
    assert domain_entry(DOMAIN) in handed.claims.lineage
    tokens = (helper.token, renewed.token, handed.token)  # the renewal replaced lead's
    assert all(valid(broker, token) for token in tokens)

    broker.federation.remove(admin(broker), DOMAIN, CTX)

    assert not any(valid(broker, token) for token in tokens)
    with pytest.raises(TaskleaseError) as refused:
        broker.renew(renewed.claims, CTX)
    assert refused.value.denial_id
    # The removal stands for these agents as for exchanged tokens: no re-declaration.
    with pytest.raises(Conflict, match="removal stands until"):
        broker.federation.add(
            admin(broker), trust_domain=DOMAIN, bundle=spiffe_bundle(key), ctx=CTX
        )


def test_an_attestor_with_its_own_keys_adds_no_federation_entry() -> None:
    broker, key = federated_broker()
    settings = {"trust_domain": "own.example", "bundle": spiffe_bundle(key)}
    broker.attestation.add(
        admin(broker), name="own", type="jwt_svid", settings=settings, policy=POLICY, ctx=CTX
    )
    claims = svid_claims("spiffe://own.example/agent", ISSUER, START)
    issued = register(
        broker, ["read:shared:1"], attestation={"type": "jwt_svid", "evidence": mint(key, claims)}
    )
    assert not [entry for entry in issued.claims.lineage if entry.startswith("fed:")]
    broker.federation.remove(admin(broker), DOMAIN, CTX)
    assert valid(broker, issued.token)
