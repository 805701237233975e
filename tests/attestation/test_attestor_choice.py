"""Which attestor verifies evidence: the one named (of the evidence's type), else the one
trusting the issuer the evidence names; never a guess among several."""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_support import CTX, ISSUER, START, admin, audit_detail, make_broker, register
from issuers import SigningKey, k8s_claims, mint

from tasklease.core.errors import TaskleaseError, Unauthorized

ISS_A = "https://a.k8s.example"
ISS_B = "https://b.k8s.example"
POLICY = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}]
WIDE = [{"match": {"namespace": "*"}, "scope": ["read:invoices:*", "write:invoices:*"]}]


def _add(broker: Any, name: str, issuer: str, key: SigningKey, policy: Any = None) -> None:
    raw = {"issuer": issuer, "jwks": json.dumps({"keys": [key.jwk()]})}
    broker.attestation.add(
        admin(broker), name=name, type="k8s_sat", settings=raw, policy=policy or POLICY, ctx=CTX
    )


def _evidence(key: SigningKey, issuer: str, **request: str) -> dict[str, str]:
    token = mint(key, k8s_claims(issuer, ISSUER, START))
    return {"type": "k8s_sat", "evidence": token, **request}


def _refused(broker: Any, call: Any) -> str:
    """The one audit detail of the refusal ``call`` raises."""
    with pytest.raises(TaskleaseError) as info:
        call()
    error = info.value
    assert isinstance(error, Unauthorized) and error.denial_id
    [detail] = audit_detail(broker, error.denial_id)
    return detail


# Would fail if: evidence whose issuer several attestors trust were verified by one of them
# (the first listed), whose policy may grant more than the operator meant for it.
def test_evidence_several_attestors_trust_must_name_one() -> None:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    _add(broker, "narrow", ISS_A, key)
    _add(broker, "wide", ISS_A, key, WIDE)
    detail = _refused(
        broker, lambda: register(broker, ["write:invoices:1"], attestation=_evidence(key, ISS_A))
    )
    assert "several k8s_sat attestors" in detail
    named = register(
        broker, ["read:invoices:1"], attestation=_evidence(key, ISS_A, attestor="narrow")
    )
    assert named.claims.raw["attest"]["attestor"] == "narrow"


# Would fail if: the attestor an issuer names were not the one chosen when attestors of
# one type trust different issuers.
def test_evidence_goes_to_the_attestor_trusting_its_issuer() -> None:
    broker = make_broker()
    key_a, key_b = SigningKey.generate("RS256"), SigningKey.generate("RS256")
    _add(broker, "a", ISS_A, key_a)
    _add(broker, "b", ISS_B, key_b)
    issued = register(broker, ["read:invoices:1"], attestation=_evidence(key_b, ISS_B))
    assert issued.claims.raw["attest"]["attestor"] == "b"
    assert issued.claims.raw["attest"]["iss"] == ISS_B


# Would fail if: an attestor named in the request were used for evidence of another type.
def test_a_named_attestor_of_another_type_is_not_configured() -> None:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    _add(broker, "prod", ISS_A, key)
    request = {**_evidence(key, ISS_A, attestor="prod"), "type": "oidc"}
    detail = _refused(broker, lambda: register(broker, ["read:invoices:1"], attestation=request))
    assert "(not_configured)" in detail and "no oidc attestor named prod" in detail
