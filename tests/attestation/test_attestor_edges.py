"""Attestor checks at their edges: each refusal here names the check that makes it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from issuers import START, SigningKey, github_claims, k8s_claims, mint

from tasklease.core.attestors import ATTESTORS, AttestationRefused, VerifyContext
from tasklease.core.attestors._jwt import keys_from_jwks, parse_jwks

AUD = "https://broker.example"
K8S_ISS = "https://kubernetes.default.svc.cluster.local"
CTX = VerifyContext(attestor="prod", audience=AUD, now=START, skew=30)


def _static(*jwks: dict[str, Any]) -> Any:
    entries = parse_jwks(json.dumps({"keys": list(jwks)}))
    return lambda _refresh: keys_from_jwks(entries)


def _k8s(*jwks: dict[str, Any]) -> tuple[Any, Any]:
    attestor = ATTESTORS["k8s_sat"]
    return attestor, attestor.settings(
        {"issuer": K8S_ISS, "jwks": json.dumps({"keys": list(jwks)})}
    )


def _refusal(call: Any) -> str:
    with pytest.raises(AttestationRefused) as info:
        call()
    return info.value.category


# Would fail if: an EC signature were not verified, so that anyone knowing an issuer's
# ES256/384/512 kid could mint evidence for any workload.
@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_an_ec_signature_by_another_key_under_the_issuers_kid_is_refused(alg: str) -> None:
    key, other = SigningKey.generate(alg), SigningKey.generate(alg)
    attestor, settings = _k8s(key.jwk())
    forged = mint(SigningKey(alg, key.kid, other.private), k8s_claims(K8S_ISS, AUD, START))
    assert _refusal(lambda: attestor.verify(forged, settings, _static(key.jwk()), CTX)) == (
        "signature"
    )
    genuine = mint(key, k8s_claims(K8S_ISS, AUD, START))
    assert attestor.verify(genuine, settings, _static(key.jwk()), CTX).subject


# Would fail if: the attestor's own algorithm allow-list were skipped, leaving only what
# the key fits: a k8s_sat attestor takes RS256 (and ES*), never PS256 or RS512, even from
# an RSA key whose JWK names no alg.
@pytest.mark.parametrize("alg", ["PS256", "RS512"])
def test_an_algorithm_outside_the_attestors_list_is_refused(alg: str) -> None:
    key = SigningKey.generate("RS256")
    jwk = {k: v for k, v in key.jwk().items() if k != "alg"}
    attestor, settings = _k8s(jwk)
    token = mint(key, k8s_claims(K8S_ISS, AUD, START), alg=alg)
    assert _refusal(lambda: attestor.verify(token, settings, _static(jwk), CTX)) == "algorithm"
    assert attestor.verify(mint(key, k8s_claims(K8S_ISS, AUD, START)), settings, _static(jwk), CTX)


# Would fail if: a JWT of another type (an access token, a DPoP proof) signed by the same
# issuer were taken as workload evidence.
@pytest.mark.parametrize("typ", ["at+jwt", "dpop+jwt", 7])
def test_evidence_of_another_typ_is_refused(typ: object) -> None:
    key = SigningKey.generate("RS256")
    attestor, settings = _k8s(key.jwk())
    token = mint(key, k8s_claims(K8S_ISS, AUD, START), typ=typ)
    assert _refusal(lambda: attestor.verify(token, settings, _static(key.jwk()), CTX)) == (
        "evidence"
    )
    typed = mint(key, k8s_claims(K8S_ISS, AUD, START), typ="jwt")
    assert attestor.verify(typed, settings, _static(key.jwk()), CTX)


# Would fail if: an oidc attestor took any algorithm the key fits rather than only the
# operator's list.
def test_an_oidc_attestor_takes_only_its_configured_algorithms() -> None:
    key = SigningKey.generate("ES384")
    oidc = ATTESTORS["oidc"]
    settings = oidc.settings(
        {
            "issuer": "https://token.actions.githubusercontent.com",
            "jwks": json.dumps({"keys": [key.jwk()]}),
        }
    )
    token = mint(key, github_claims(AUD, START))
    assert _refusal(lambda: oidc.verify(token, settings, _static(key.jwk()), CTX)) == "algorithm"


# Would fail if: ``nbf`` or ``iat`` were checked only together, so that evidence whose one
# time claim lies beyond the skew (the other absent or now) were accepted early.
@pytest.mark.parametrize("name", ["nbf", "iat"])
def test_each_time_claim_past_the_skew_alone_is_not_yet_valid(name: str) -> None:
    key = SigningKey.generate("RS256")
    attestor, settings = _k8s(key.jwk())
    claims = k8s_claims(K8S_ISS, AUD, START)
    other = "iat" if name == "nbf" else "nbf"
    for ahead, accepted in ((30, True), (31, False)):
        early = {**claims, name: int(START) + ahead}
        early.pop(other)
        token = mint(key, early)
        if accepted:
            assert attestor.verify(token, settings, _static(key.jwk()), CTX)
        else:
            assert _refusal(
                lambda t=token: attestor.verify(t, settings, _static(key.jwk()), CTX)
            ) == ("not_yet_valid")


# Would fail if: the attestor's ``max_age`` were not enforced, or the evidence's validity
# (how long its replay row is kept) outlived ``iat + max_age``: old evidence, or evidence
# valid for longer than its replay row lives, could register again.
def test_evidence_older_or_longer_lived_than_max_age_is_refused() -> None:
    key = SigningKey.generate("RS256")
    attestor = ATTESTORS["k8s_sat"]
    settings = attestor.settings(
        {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]}), "max_age": 60}
    )
    keys = _static(key.jwk())
    base = {**k8s_claims(K8S_ISS, AUD, START), "exp": int(START) + 600}
    base.pop("nbf")
    young = {**base, "iat": int(START) - 20}
    assert attestor.verify(mint(key, young), settings, keys, CTX).valid_until == START + 40
    old = mint(key, {**base, "iat": int(START) - 61})
    assert _refusal(lambda: attestor.verify(old, settings, keys, CTX)) == "expired"
    # Without iat, the evidence's own lifetime from now is bounded by max_age.
    base.pop("iat")
    assert _refusal(lambda: attestor.verify(mint(key, base), settings, keys, CTX)) == "expired"
    short = mint(key, {**base, "exp": int(START) + 60})
    assert attestor.verify(short, settings, keys, CTX).valid_until == START + 60


# Would fail if: a JWK not meant for verifying (``key_ops`` without ``verify``), one whose
# own ``alg`` its key cannot do, or a ``kid`` two keys of a set share, were a key.
def test_jwks_entries_that_cannot_be_trusted_to_verify_are_not_keys() -> None:
    key, twin = SigningKey.generate("RS256"), SigningKey.generate("RS256")
    assert keys_from_jwks([key.jwk(key_ops=["encrypt"])]) == {}
    assert keys_from_jwks([key.jwk(key_ops="verify")]) == {}
    assert set(keys_from_jwks([key.jwk(key_ops=["verify"])])) == {key.kid}
    assert keys_from_jwks([key.jwk(alg="ES256")]) == {}
    assert keys_from_jwks([key.jwk(), twin.jwk(kid=key.kid)]) == {}
    attestor, settings = _k8s(key.jwk(), twin.jwk(kid=key.kid))
    token = mint(twin, k8s_claims(K8S_ISS, AUD, START), kid=key.kid)
    keys = _static(key.jwk(), twin.jwk(kid=key.kid))
    assert _refusal(lambda: attestor.verify(token, settings, keys, CTX)) == "key"


# Would fail if: an oidc attestor took evidence another issuer signed with a key both
# publish (a shared JWKS), or evidence naming no subject.
def test_an_oidc_attestor_takes_only_its_issuers_evidence_with_a_subject() -> None:
    key = SigningKey.generate("RS256")
    oidc = ATTESTORS["oidc"]
    issuer = "https://token.actions.githubusercontent.com"
    settings = oidc.settings({"issuer": issuer, "jwks": json.dumps({"keys": [key.jwk()]})})
    keys = _static(key.jwk())
    assert oidc.verify(mint(key, github_claims(AUD, START)), settings, keys, CTX).subject
    other = mint(key, github_claims(AUD, START, issuer="https://gitlab.example"))
    assert _refusal(lambda: oidc.verify(other, settings, keys, CTX)) == "issuer"
    nobody = {**github_claims(AUD, START), "sub": ""}
    assert _refusal(lambda: oidc.verify(mint(key, nobody), settings, keys, CTX)) == "claims"
