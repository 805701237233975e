"""Evidence is single use whatever its signature's encoding and whichever attestor is
named: an ECDSA signature (r, s) also verifies as (r, n - s), so the same token with its
signature changed was taken for new evidence; and one token registered once through each
attestor configured for its issuer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from core_support import CTX, ISSUER, START, admin, make_broker, register
from issuers import SigningKey, b64url, k8s_claims, mint, spiffe_bundle, svid_claims

from tasklease.core.errors import Unauthorized
from tasklease.rules.jws import b64url_decode

K8S = "https://k8s.example"
# The order of the P-256 group: s and n - s both verify.
N256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _other_signature(token: str) -> str:
    """``token`` with its ES256 signature's ``s`` replaced by ``n - s``: another string
    for the same evidence, as valid as the first."""
    header, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    return f"{header}.{payload}.{b64url(raw[:32] + (N256 - s).to_bytes(32, 'big'))}"


def _refused(broker: Any, evidence: dict[str, str], task: str) -> None:
    with pytest.raises(Unauthorized) as info:
        register(broker, ["read:x:1"], attestation=evidence, task=task)
    assert info.value.denial_id


def test_a_jwt_svid_with_its_signature_re_encoded_is_a_replay() -> None:
    broker = make_broker()
    key = SigningKey.generate("ES256")
    broker.attestation.add(
        admin(broker),
        name="spire",
        type="jwt_svid",
        settings={"trust_domain": "prod.example", "bundle": spiffe_bundle(key)},
        policy=[{"match": {"path": "/agent"}, "scope": ["read:x:*"]}],
        ctx=CTX,
    )
    token = mint(key, svid_claims("spiffe://prod.example/agent", ISSUER, START), typ="JWT")
    other = _other_signature(token)
    assert other != token
    register(broker, ["read:x:1"], attestation={"type": "jwt_svid", "evidence": token})
    _refused(broker, {"type": "jwt_svid", "evidence": token}, "t2")
    _refused(broker, {"type": "jwt_svid", "evidence": other}, "t3")


def test_a_token_without_jti_with_its_signature_re_encoded_is_a_replay() -> None:
    broker = make_broker()
    key = SigningKey.generate("ES256")
    broker.attestation.add(
        admin(broker),
        name="prod",
        type="k8s_sat",
        settings={"issuer": K8S, "jwks": json.dumps({"keys": [key.jwk()]})},
        policy=[{"match": {"namespace": "billing"}, "scope": ["read:x:*"]}],
        ctx=CTX,
    )
    claims = k8s_claims(K8S, ISSUER, START)
    del claims["jti"]
    token = mint(key, claims)
    register(broker, ["read:x:1"], attestation={"type": "k8s_sat", "evidence": token})
    _refused(broker, {"type": "k8s_sat", "evidence": _other_signature(token)}, "t2")


def test_one_token_registers_once_whichever_attestor_is_named() -> None:
    broker = make_broker()
    key = SigningKey.generate("RS256")
    settings = {"issuer": K8S, "jwks": json.dumps({"keys": [key.jwk()]})}
    policy = [{"match": {"namespace": "billing"}, "scope": ["read:x:*"]}]
    for name in ("alpha", "beta"):
        broker.attestation.add(
            admin(broker), name=name, type="k8s_sat", settings=settings, policy=policy, ctx=CTX
        )
    token = mint(key, k8s_claims(K8S, ISSUER, START))
    register(
        broker,
        ["read:x:1"],
        attestation={"type": "k8s_sat", "evidence": token, "attestor": "alpha"},
    )
    _refused(broker, {"type": "k8s_sat", "evidence": token, "attestor": "beta"}, "t2")
    # Another token of the same workload is new evidence.
    fresh = mint(key, k8s_claims(K8S, ISSUER, START))
    register(
        broker,
        ["read:x:1"],
        attestation={"type": "k8s_sat", "evidence": fresh, "attestor": "beta"},
        task="t3",
    )
