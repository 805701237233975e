"""The attestors and the strict JWT verifier, with real keys and real signatures."""

from __future__ import annotations

import json
from typing import Any

import jwt as pyjwt
import pytest
from issuers import (
    START,
    SigningKey,
    github_claims,
    hs256_with_public_key,
    k8s_claims,
    mint,
    spiffe_bundle,
    svid_claims,
)

from tasklease.core.attestors import ATTESTORS, AttestationRefused, SettingsError, VerifyContext
from tasklease.core.attestors._jwt import keys_from_jwks, parse_jwks, verify_jwt
from tasklease.rules import scopes as scope_rules

AUD = "https://broker.example"
K8S_ISS = "https://kubernetes.default.svc.cluster.local"


def ctx(name: str = "prod", now: float = START) -> VerifyContext:
    return VerifyContext(attestor=name, audience=AUD, now=now, skew=30)


def static(*keys: SigningKey) -> Any:
    entries = parse_jwks(json.dumps({"keys": [k.jwk() for k in keys]}))
    return lambda _refresh: keys_from_jwks(entries)


def k8s(key: SigningKey, **extra: Any) -> tuple[Any, Any]:
    attestor = ATTESTORS["k8s_sat"]
    raw = {"issuer": K8S_ISS, "jwks": json.dumps({"keys": [key.jwk()]}), **extra}
    return attestor, attestor.settings(raw)


def refused(call: Any) -> AttestationRefused:
    with pytest.raises(AttestationRefused) as info:
        call()
    return info.value


# --- k8s_sat --------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "ES512"])
def test_a_projected_service_account_token_yields_its_facts(alg: str) -> None:
    key = SigningKey.generate(alg)
    attestor, settings = k8s(key, cluster="prod-eu")
    token = mint(key, k8s_claims(K8S_ISS, AUD, START))
    attested = attestor.verify(token, settings, static(key), ctx())
    assert attested.subject == "system:serviceaccount:billing:agent-runner"
    assert attested.facts["namespace"] == "billing"
    assert attested.facts["service_account"] == "agent-runner"
    assert attested.facts["pod"] == "runner-7d9f"
    assert attested.facts["node"] == "node-1"
    assert attested.facts["cluster"] == "prod-eu"
    assert attested.valid_until == START + 600
    assert token not in attested.replay_key and len(attested.replay_key) == 64


def test_k8s_refusals_name_their_reason() -> None:
    key = SigningKey.generate("RS256")
    other = SigningKey.generate("RS256")
    attestor, settings = k8s(key)
    keys = static(key)
    good = k8s_claims(K8S_ISS, AUD, START)

    def verify(token: str, now: float = START) -> AttestationRefused:
        return refused(lambda: attestor.verify(token, settings, keys, ctx(now=now)))

    assert verify(mint(key, {**good, "aud": ["https://other"]})).category == "audience"
    assert verify(mint(key, {**good, "iss": "https://evil"})).category == "issuer"
    # Dead at exp: not one second of leeway.
    assert verify(mint(key, good), now=good["exp"]).category == "expired"
    assert attestor.verify(mint(key, good), settings, keys, ctx(now=good["exp"] - 1))
    # nbf/iat: 30 s of skew, not 31.
    ahead = k8s_claims(K8S_ISS, AUD, START + 30)
    assert attestor.verify(mint(key, ahead), settings, keys, ctx())
    ahead = k8s_claims(K8S_ISS, AUD, START + 31)
    assert verify(mint(key, ahead)).category == "not_yet_valid"
    # A key the issuer does not publish.
    assert verify(mint(other, good)).category == "key"
    # Signed by the right kid's name but another key.
    forged = mint(SigningKey(key.alg, key.kid, other.private), good)
    assert verify(forged).category == "signature"
    # A secret-bound (not pod-bound) token.
    secret_bound = k8s_claims(K8S_ISS, AUD, START, pod=None)
    assert verify(mint(key, secret_bound)).category == "claims"
    # sub and kubernetes.io disagree.
    assert (
        verify(mint(key, {**good, "sub": "system:serviceaccount:kube-system:admin"})).category
        == "claims"
    )


def test_alg_confusion_is_refused() -> None:
    key = SigningKey.generate("RS256")
    attestor, settings = k8s(key)
    keys = static(key)
    claims = k8s_claims(K8S_ISS, AUD, START)
    # HS256 keyed with the RSA public key: no HS* ever.
    error = refused(
        lambda: attestor.verify(hs256_with_public_key(key, claims), settings, keys, ctx())
    )
    assert error.category == "algorithm"
    # "none".
    none = mint(key, claims, alg="none")  # an unsecured JWS: no signature segment at all
    assert refused(lambda: attestor.verify(none, settings, keys, ctx())).category == "evidence"
    none += "AAAA"  # and with one
    assert refused(lambda: attestor.verify(none, settings, keys, ctx())).category == "algorithm"
    # An EC key's kid with an RSA algorithm, and a PS token for a JWK declared RS256.
    ec_key = SigningKey.generate("ES256")
    token = mint(SigningKey("RS256", ec_key.kid, key.private), claims)
    error = refused(lambda: attestor.verify(token, settings, static(ec_key), ctx()))
    assert error.category == "algorithm"
    oidc = ATTESTORS["oidc"]
    oidc_settings = oidc.settings(
        {"issuer": K8S_ISS, "jwks": "{}", "algorithms": ["RS256", "PS256"]}
    )
    ps = mint(key, {**claims, "aud": AUD}, alg="PS256")
    error = refused(lambda: oidc.verify(ps, oidc_settings, keys, ctx()))
    assert error.category == "algorithm"  # the JWK says alg RS256


def test_headers_that_point_elsewhere_are_refused() -> None:
    key = SigningKey.generate("RS256")
    attestor, settings = k8s(key)
    claims = k8s_claims(K8S_ISS, AUD, START)
    for extra in ({"jku": "https://evil/keys"}, {"jwk": key.jwk()}, {"crit": ["exp"]}):
        token = mint(key, claims, **extra)
        error = refused(lambda t=token: attestor.verify(t, settings, static(key), ctx()))
        assert error.category == "evidence"
    no_kid = mint(key, claims, kid=None)
    assert refused(lambda: attestor.verify(no_kid, settings, static(key), ctx())).category == "key"


def test_an_unknown_kid_asks_for_fresh_keys_once() -> None:
    old, new = SigningKey.generate("RS256"), SigningKey.generate("RS256")
    attestor, settings = k8s(old)
    calls: list[bool] = []
    served = {"keys": [old]}

    def keys(refresh: bool) -> Any:
        calls.append(refresh)
        if refresh:
            served["keys"] = [old, new]
        return static(*served["keys"])(refresh)

    token = mint(new, k8s_claims(K8S_ISS, AUD, START))
    assert attestor.verify(token, settings, keys, ctx()).subject
    assert calls == [False, True]


def test_private_and_weak_keys_are_not_keys() -> None:
    key = SigningKey.generate("RS256")
    small = SigningKey(
        "RS256",
        "small",
        __import__(
            "cryptography.hazmat.primitives.asymmetric.rsa", fromlist=["x"]
        ).generate_private_key(public_exponent=65537, key_size=1024),
    )
    entries = [
        {**key.jwk(), "d": "AAAA"},
        small.jwk(),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**key.jwk(kid="enc"), "use": "enc"},
    ]
    assert keys_from_jwks(entries) == {}


def test_pyjwt_and_this_verifier_agree() -> None:
    """Cross-verification: tokens minted by PyJWT verify here, and the reverse."""
    for alg in ("RS256", "PS384", "ES256", "ES512"):
        key = SigningKey.generate(alg)
        claims = {"iss": "https://i", "aud": AUD, "exp": int(START) + 60}
        theirs = pyjwt.encode(claims, key.private, algorithm=alg, headers={"kid": key.kid})
        entries = parse_jwks(json.dumps({"keys": [key.jwk()]}))
        checked = verify_jwt(theirs, keys_from_jwks(entries), algorithms=[alg])
        assert checked.claims == claims
        ours = mint(key, claims)
        public = key.private.public_key()
        assert (
            pyjwt.decode(
                ours, public, algorithms=[alg], audience=AUD, options={"verify_exp": False}
            )
            == claims
        )


# --- jwt_svid --------------------------------------------------------------------------------


def test_a_jwt_svid_verifies_against_its_bundle() -> None:
    key = SigningKey.generate("ES256")
    attestor = ATTESTORS["jwt_svid"]
    settings = attestor.settings(
        {"trust_domain": "prod.example", "bundle": spiffe_bundle(key), "path": "/ns/billing/*"}
    )
    keys = lambda _r: keys_from_jwks(json.loads(settings.source.jwks)["keys"])  # noqa: E731
    spiffe_id = "spiffe://prod.example/ns/billing/sa/runner"
    token = mint(key, svid_claims(spiffe_id, AUD, START), typ="JWT")
    attested = attestor.verify(token, settings, keys, ctx())
    assert attested.subject == spiffe_id
    assert attested.facts == {
        "spiffe_id": spiffe_id,
        "trust_domain": "prod.example",
        "path": "/ns/billing/sa/runner",
    }
    # Another trust domain, a path outside the glob, an extra header, EdDSA.
    other = mint(key, svid_claims("spiffe://evil.example/ns/billing/x", AUD, START))
    assert refused(lambda: attestor.verify(other, settings, keys, ctx())).category == "issuer"
    outside = mint(key, svid_claims("spiffe://prod.example/ns/ops/x", AUD, START))
    assert refused(lambda: attestor.verify(outside, settings, keys, ctx())).category == "claims"
    extra = mint(key, svid_claims(spiffe_id, AUD, START), cty="JWT")
    assert refused(lambda: attestor.verify(extra, settings, keys, ctx())).category == "evidence"
    not_svid = mint(key, svid_claims("spiffe://prod.example/a/../b", AUD, START))
    assert refused(lambda: attestor.verify(not_svid, settings, keys, ctx())).category == "claims"


def test_svid_settings_want_exactly_one_key_source() -> None:
    attestor = ATTESTORS["jwt_svid"]
    with pytest.raises(SettingsError):
        attestor.settings({"trust_domain": "prod.example"})
    with pytest.raises(SettingsError):
        attestor.settings({"trust_domain": "prod.example", "bundle": "{}", "federation": True})
    federated = attestor.settings({"trust_domain": "prod.example", "federation": True})
    assert federated.source.federation == "prod.example" and not federated.source.fetched


# --- oidc -------------------------------------------------------------------------------------


def test_a_github_actions_token_meets_the_claim_rules_or_is_refused() -> None:
    key = SigningKey.generate("RS256")
    oidc = ATTESTORS["oidc"]
    raw = {
        "issuer": "https://token.actions.githubusercontent.com",
        "jwks": json.dumps({"keys": [key.jwk()]}),
        "claims": {"repository_id": "74", "ref": "refs/heads/*"},
    }
    settings = oidc.settings(raw)
    token = mint(key, github_claims(AUD, START), typ="JWT", x5t="abc")
    attested = oidc.verify(token, settings, static(key), ctx("github"))
    assert attested.subject == "repo:octo-org/octo-repo:ref:refs/heads/main"
    assert attested.facts["repository"] == "octo-org/octo-repo"
    assert attested.facts["job_workflow_ref"].endswith("deploy.yml@refs/heads/main")
    tag = mint(key, github_claims(AUD, START, ref="refs/tags/v1"))
    assert refused(lambda: oidc.verify(tag, settings, static(key), ctx())).category == "claims"
    # GitHub's default audience is the owner's URL, not ours.
    owner = mint(key, github_claims("https://github.com/octo-org", START))
    assert refused(lambda: oidc.verify(owner, settings, static(key), ctx())).category == "audience"


def test_settings_refuse_what_cannot_be_trusted() -> None:
    oidc = ATTESTORS["oidc"]
    for raw in (
        {"issuer": "http://plain.example"},  # keys would be discovered over plain HTTP
        {"issuer": "https://i", "jwks_uri": "http://i/keys"},
        {"issuer": "https://i", "algorithms": ["HS256"]},
        {"issuer": "https://i", "algorithms": ["none"]},
        {"issuer": "https://i", "jwks_refresh": 600, "jwks_max_stale": 60},
        {"issuer": "https://i", "claims": {"ref": ""}},
    ):
        with pytest.raises(SettingsError):
            oidc.settings(raw)


def test_scope_intersection_is_the_meet_of_two_ceilings() -> None:
    a = ("read:invoices:*", "write:invoices:7", "read:users:1")
    b = ("read:invoices:42", "write:invoices:*")
    meet = scope_rules.intersect(a, b)
    assert set(meet) == {"read:invoices:42", "write:invoices:7"}
    for requested in (
        ["read:invoices:42"],
        ["write:invoices:7"],
        ["read:users:1"],
        ["read:invoices:1"],
    ):
        assert scope_rules.is_subset(requested, meet) == (
            scope_rules.is_subset(requested, a) and scope_rules.is_subset(requested, b)
        )


# Would fail if: a time claim no float holds raised OverflowError (an internal error, no
# audited refusal) instead of refusing the evidence, as ``math.isfinite`` on it did.
@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_an_evidence_time_no_float_holds_is_refused(name: str) -> None:
    from tasklease.core.attestors._jwt import check_claims

    claims = {"iss": "https://issuer.example", "aud": "tasklease", "exp": 2_000_000_000}
    claims[name] = 10**400
    with pytest.raises(AttestationRefused, match=f"claim {name} missing or not a number"):
        check_claims(
            claims,
            issuer="https://issuer.example",
            audience="tasklease",
            now=1_900_000_000.0,
            skew=30,
            max_age=300,
        )
