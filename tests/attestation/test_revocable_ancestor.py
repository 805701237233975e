"""Every attested agent stays revocable through its attestation.

Revoking ``attest:<type>:<attestor>:<subject>`` at level ``chain`` is the documented way
to end what was registered through one subject (docs/attestation.md). The subject is the
identity provider's (a SPIFFE ID, an OIDC ``sub`` naming a branch that anyone with push
access names), and a revocation target is refused when longer than ``MAX_TARGET`` or
shaped like a token (a pasted credential is never published on the feed).

Would fail if: evidence whose ancestor no revocation could name registered, so that its
agent, its renewals and what it delegated could be ended only one agent at a time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_support import CTX, admin, audit_detail, make_broker, register, valid
from issuers import START, SigningKey, github_claims, mint, spiffe_bundle, svid_claims

from tasklease.core.broker import Broker
from tasklease.core.errors import Unauthorized

ISSUER = "https://broker.example"
GITHUB = "https://token.actions.githubusercontent.com"
POLICY = [{"match": {}, "scope": ["read:invoices:*"]}]


def attested_broker(kind: str) -> tuple[Broker, SigningKey]:
    broker = make_broker()
    key = SigningKey.generate("ES256")
    settings: dict[str, Any] = (
        {"trust_domain": "prod.example", "bundle": spiffe_bundle(key)}
        if kind == "jwt_svid"
        else {"issuer": GITHUB, "jwks": json.dumps({"keys": [key.jwk()]})}
    )
    broker.attestation.add(
        admin(broker), name="idp", type=kind, settings=settings, policy=POLICY, ctx=CTX
    )
    return broker, key


def evidence(kind: str, key: SigningKey, subject: str) -> dict[str, Any]:
    claims = (
        svid_claims(subject, ISSUER, START)
        if kind == "jwt_svid"
        else {**github_claims(ISSUER, START), "sub": subject}
    )
    return {"type": kind, "evidence": mint(key, claims)}


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("jwt_svid", "spiffe://prod.example/ns/eyJhbGciOiJFUzI1NiJ9.e30.c2ln"),  # a JWT's shape
        ("jwt_svid", "spiffe://prod.example/ns/tlr_" + "A" * 43),  # a by-reference token's
        ("oidc", "repo:octo-org/octo-repo:ref:refs/heads/eyJ0.e30.x"),  # a branch's name
        ("oidc", "repo:octo-org/octo-repo:ref:refs/heads/" + "b" * 2000),  # 2,039 characters
    ],
)
def test_evidence_whose_ancestor_no_revocation_could_name_is_refused(
    kind: str, subject: str
) -> None:
    broker, key = attested_broker(kind)
    with pytest.raises(Unauthorized) as refused:
        register(broker, ["read:invoices:1"], attestation=evidence(kind, key, subject))
    [detail] = audit_detail(broker, refused.value.denial_id)
    assert "attestation refused (claims): subject" in detail
    assert "no revocation could name its agents' ancestor" in detail


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("jwt_svid", "spiffe://prod.example/ns/billing/sa/runner"),
        ("jwt_svid", "spiffe://prod.example/ns/" + "ab" * 40),  # a hash: public, revocable
        ("oidc", "repo:octo-org/octo-repo:ref:refs/heads/main"),
    ],
)
def test_an_attested_agent_is_ended_through_its_attestation(kind: str, subject: str) -> None:
    broker, key = attested_broker(kind)
    issued = register(broker, ["read:invoices:1"], attestation=evidence(kind, key, subject))
    ancestor = f"attest:{kind}:idp:{subject}"
    assert ancestor in issued.claims.lineage
    broker.revoke(admin(broker), level="chain", target=ancestor, ctx=CTX)
    assert not valid(broker, issued.token)
