"""Attestation end to end over loopback HTTP: issuers serving OIDC discovery and a JWKS
over HTTPS (keys made per test), a broker fetching them, agents registering with the SDK
and no launch token, and every attack refused with a denial id and one audit event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_support import ISSUER, Deployment, deploy
from issuers import (
    IssuerCA,
    OidcIssuer,
    Served,
    SigningKey,
    github_claims,
    hs256_with_public_key,
    k8s_claims,
    make_ca,
    mint,
    spiffe_bundle,
    svid_claims,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tasklease.client import Agent, ScopeViolation, Unauthorized
from tasklease.rules.attest import attestation_of

pytestmark = pytest.mark.slow

K8S_POLICY = [
    {
        "match": {"cluster": "prod", "namespace": "billing", "service_account": "agent-runner"},
        "scope": ["read:invoices:*"],
        "ttl": 120,
        "lifetime": 600,
    }
]
GITHUB_POLICY = [
    {
        "match": {"repository_id": "74", "ref": "refs/heads/main"},
        "scope": ["deploy:staging:*"],
        "ttl": 60,
    }
]


@pytest.fixture
def ca(tmp_path: Path) -> IssuerCA:
    return make_ca(tmp_path)


@pytest.fixture
def issuer(ca: IssuerCA) -> Iterator[OidcIssuer]:
    started = OidcIssuer(ca, keys=[SigningKey.generate("RS256")]).start()
    yield started
    started.stop()


@pytest.fixture
def broker() -> Iterator[Deployment]:
    deployment = deploy()
    yield deployment
    deployment.stop()


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    import base64

    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def k8s_attestor(broker: Deployment, issuer: OidcIssuer, ca: IssuerCA, **extra: Any) -> None:
    settings = {"issuer": issuer.url, "ca_pem": ca.pem, "cluster": "prod", **extra}
    broker.add_attestor(
        {"name": "prod", "type": "k8s_sat", "settings": settings, "policy": K8S_POLICY}
    )


def sa_token(
    issuer: OidcIssuer, broker: Deployment, key: SigningKey | None = None, **claims: Any
) -> str:
    return mint(key or issuer.keys[0], k8s_claims(issuer.url, ISSUER, broker.now(), **claims))


# --- the three kinds of evidence, no launch token ------------------------------------------


def test_a_pod_registers_with_its_service_account_token(
    broker: Deployment, issuer: OidcIssuer, ca: IssuerCA, tmp_path: Path
) -> None:
    k8s_attestor(broker, issuer, ca)
    token_file = tmp_path / "token"
    token_file.write_text(sa_token(issuer, broker))
    with Agent.from_kubernetes(
        broker.url,
        "orch-1",
        "task-1",
        ["read:invoices:*"],
        token_path=token_file,
        clock=broker.clock,
        declared={"model": "acme/agent/3", "runtime": "sha256:" + "ab" * 32},
    ) as agent:
        claims = payload(agent.token)
        assert claims["scope"] == "read:invoices:*"  # exactly the policy's ceiling
        assert claims["exp"] - claims["iat"] == 120
        assert claims["max_exp"] == claims["iat"] + 600
        attestation = attestation_of(claims)
        assert attestation is not None and attestation.type == "k8s_sat"
        assert attestation.attested("namespace") == "billing"
        assert attestation.attested("pod") == "runner-7d9f"
        assert attestation.attested("model") is None  # declared, never attested
        assert attestation.declared["model"] == "acme/agent/3"
        assert claims["lineage"] == [
            "attest:k8s_sat:prod:system:serviceaccount:billing:agent-runner"
        ]
        # Beyond the ceiling: refused, and the pod's token was not spent by the refusal.
    token_file.write_text(sa_token(issuer, broker))
    with pytest.raises(ScopeViolation):
        Agent.from_kubernetes(
            broker.url, "orch-1", "task-2", ["write:invoices:1"], token_path=token_file
        )
    assert issuer.hits == 1  # keys fetched once, then served from the cache


def test_a_github_actions_job_registers_with_its_oidc_token(
    broker: Deployment, ca: IssuerCA
) -> None:
    github = OidcIssuer(ca, keys=[SigningKey.generate("RS256")]).start()
    try:
        settings = {
            "issuer": github.url,
            "ca_pem": ca.pem,
            "claims": {"repository_owner_id": "65", "ref": "refs/heads/*"},
        }
        broker.add_attestor(
            {"name": "github", "type": "oidc", "settings": settings, "policy": GITHUB_POLICY}
        )
        asked: list[str] = []

        async def runner(request: Request) -> Response:
            # The runner's ID token endpoint: a bearer, then a token for the audience asked.
            if request.headers.get("authorization") != "Bearer runner-secret":
                return Response(status_code=401)
            asked.append(request.query_params["audience"])
            claims = github_claims(
                request.query_params["audience"], broker.now(), issuer=github.url
            )
            return JSONResponse({"count": 1, "value": mint(github.keys[0], claims, typ="JWT")})

        endpoint = Served(Starlette(routes=[Route("/token", runner)]))
        try:
            env = {
                "ACTIONS_ID_TOKEN_REQUEST_URL": f"{endpoint.url}/token?api-version=2.0",
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-secret",
            }
            agent = Agent.from_github_actions(
                broker.url,
                "ci",
                "deploy-42",
                ["deploy:staging:web"],
                audience=ISSUER,
                env=env,
                clock=broker.clock,
            )
        finally:
            endpoint.stop()
        assert asked == [ISSUER]
        claims = payload(agent.token)
        assert claims["scope"] == "deploy:staging:web"
        assert claims["exp"] - claims["iat"] == 60
        attested = attestation_of(claims)
        assert attested is not None and attested.attested("repository") == "octo-org/octo-repo"
        assert attested.subject == "repo:octo-org/octo-repo:ref:refs/heads/main"
        agent.close()
    finally:
        github.stop()


def test_a_spiffe_workload_registers_with_a_jwt_svid(broker: Deployment) -> None:
    key = SigningKey.generate("ES256")
    policy = [{"match": {"path": "/ns/billing/*"}, "scope": ["read:invoices:*"], "ttl": 90}]
    settings = {"trust_domain": "prod.example", "bundle": spiffe_bundle(key)}
    broker.add_attestor(
        {"name": "spire", "type": "jwt_svid", "settings": settings, "policy": policy}
    )
    svid = mint(
        key, svid_claims("spiffe://prod.example/ns/billing/sa/runner", ISSUER, broker.now())
    )
    agent = Agent.from_oidc(
        broker.url, svid, "orch", "t1", ["read:invoices:9"], kind="jwt_svid", clock=broker.clock
    )
    claims = payload(agent.token)
    assert claims["scope"] == "read:invoices:9" and claims["exp"] - claims["iat"] == 90
    assert claims["attest"]["facts"]["spiffe_id"] == "spiffe://prod.example/ns/billing/sa/runner"
    agent.close()


def test_a_jwt_svid_verifies_against_a_federated_domains_bundle(broker: Deployment) -> None:
    key = SigningKey.generate("RS256")
    added = broker.client.post(
        "/v1/admin/federations",
        json={"trust_domain": "partner.example", "bundle": spiffe_bundle(key)},
        headers=broker.admin_headers(),
    )
    assert added.status_code == 201, added.text
    policy = [{"match": {}, "scope": ["read:shared:*"]}]
    settings = {"trust_domain": "partner.example", "federation": True}
    broker.add_attestor(
        {"name": "partner", "type": "jwt_svid", "settings": settings, "policy": policy}
    )
    svid = mint(key, svid_claims("spiffe://partner.example/agent", ISSUER, broker.now()))
    answer = broker.register(["read:shared:1"], {"type": "jwt_svid", "evidence": svid})
    assert answer.status_code == 200, answer.text
    # Federation removed: the domain's bundle is no longer trusted for evidence either.
    broker.client.delete("/v1/admin/federations/partner.example", headers=broker.admin_headers())
    svid = mint(key, svid_claims("spiffe://partner.example/agent", ISSUER, broker.now()))
    detail = broker.denial(
        broker.register(["read:shared:1"], {"type": "jwt_svid", "evidence": svid})
    )
    assert "(unavailable)" in detail


# --- attacks -----------------------------------------------------------------------------------


def test_every_attack_is_refused_with_a_denial_id_and_one_audit_event(
    broker: Deployment, issuer: OidcIssuer, ca: IssuerCA
) -> None:
    k8s_attestor(broker, issuer, ca)
    now = broker.now()
    good = k8s_claims(issuer.url, ISSUER, now)
    key = issuer.keys[0]
    stranger = SigningKey.generate("RS256")
    replayed = mint(key, good)
    assert (
        broker.register(["read:invoices:1"], {"type": "k8s_sat", "evidence": replayed}).status_code
        == 200
    )
    attacks = {
        "wrong audience": (
            mint(key, {**good, "aud": ["https://github.com/octo-org"]}),
            "(audience)",
        ),
        "expired": (mint(key, k8s_claims(issuer.url, ISSUER, now - 600)), "(expired)"),
        "replayed": (replayed, "evidence already used"),
        "issuer not configured": (
            mint(key, k8s_claims("https://evil.example", ISSUER, now)),
            "(not_configured)",
        ),
        "key not in the JWKS": (mint(stranger, good), "(key)"),
        "alg confusion": (hs256_with_public_key(key, good), "(algorithm)"),
        "claim rule just missed": (
            mint(key, k8s_claims(issuer.url, ISSUER, now, account="agent-runner2")),
            "(policy)",
        ),
    }
    for name, (evidence, expected) in attacks.items():
        answer = broker.register(["read:invoices:1"], {"type": "k8s_sat", "evidence": evidence})
        assert answer.json()["detail"] == "attestation refused", name
        detail = broker.denial(answer)
        assert expected in detail, (name, detail)
        assert evidence not in detail  # evidence is named by a hash, never written


def test_an_oidc_claim_rule_just_missed_is_refused(broker: Deployment, ca: IssuerCA) -> None:
    github = OidcIssuer(ca, keys=[SigningKey.generate("RS256")]).start()
    try:
        settings = {"issuer": github.url, "ca_pem": ca.pem, "claims": {"repository_id": "74"}}
        broker.add_attestor(
            {"name": "gh", "type": "oidc", "settings": settings, "policy": GITHUB_POLICY}
        )
        fork = {**github_claims(ISSUER, broker.now(), issuer=github.url), "repository_id": "740"}
        detail = broker.denial(
            broker.register(
                ["deploy:staging:web"], {"type": "oidc", "evidence": mint(github.keys[0], fork)}
            )
        )
        assert "claim rule on repository_id not met" in detail
    finally:
        github.stop()


def test_jwks_rotation_picks_up_the_new_key_and_drops_the_removed_one(
    broker: Deployment, issuer: OidcIssuer, ca: IssuerCA
) -> None:
    k8s_attestor(broker, issuer, ca, jwks_refresh=60, jwks_max_stale=600)
    old, new = issuer.keys[0], SigningKey.generate("ES256")

    def attempt(key: SigningKey, task: str) -> httpx.Response:
        return broker.register(
            ["read:invoices:1"],
            {"type": "k8s_sat", "evidence": sa_token(issuer, broker, key)},
            task=task,
        )

    assert attempt(old, "a").status_code == 200
    issuer.keys = [old, new]  # the issuer publishes its next key, then signs with it
    broker.clock.advance(11)
    assert attempt(new, "b").status_code == 200  # unknown kid: fetched anew
    assert issuer.hits == 2
    issuer.keys = [new]  # the old key is withdrawn
    assert attempt(old, "c").status_code == 200  # still cached: not yet refreshed
    broker.clock.advance(61)
    assert "(key)" in broker.denial(attempt(old, "d"))  # refreshed: gone
    assert attempt(new, "e").status_code == 200


def test_an_unreachable_issuer_is_served_from_cache_until_its_limit_then_fails_closed(
    broker: Deployment, issuer: OidcIssuer, ca: IssuerCA
) -> None:
    k8s_attestor(broker, issuer, ca, jwks_refresh=60, jwks_max_stale=300)

    def attempt(task: str) -> httpx.Response:
        return broker.register(
            ["read:invoices:1"],
            {"type": "k8s_sat", "evidence": sa_token(issuer, broker)},
            task=task,
        )

    assert attempt("a").status_code == 200
    issuer.up = False
    broker.clock.advance(120)  # due for a refresh, which fails: the cached keys serve
    assert attempt("b").status_code == 200
    broker.clock.advance(200)  # 320 s since the last good fetch: beyond jwks_max_stale
    detail = broker.denial(attempt("c"))
    assert "(unavailable)" in detail and "jwks_max_stale" in detail
    issuer.up = True
    broker.clock.advance(11)
    assert attempt("d").status_code == 200  # back: fetched again


def test_the_operator_tests_evidence_and_sees_the_policy_it_would_get(
    broker: Deployment, issuer: OidcIssuer, ca: IssuerCA
) -> None:
    k8s_attestor(broker, issuer, ca)
    evidence = sa_token(issuer, broker)
    answer = broker.client.post(
        "/v1/admin/attestors/prod/test", json={"evidence": evidence}, headers=broker.admin_headers()
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["matched"] is True and result["scope"] == ["read:invoices:*"]
    assert result["ttl"] == 120 and result["lifetime"] == 600
    assert result["attest"]["facts"]["service_account"] == "agent-runner"
    # Not consumed: the same evidence still registers.
    assert (
        broker.register(["read:invoices:1"], {"type": "k8s_sat", "evidence": evidence}).status_code
        == 200
    )
    other = sa_token(issuer, broker, namespace="ops")
    answer = broker.client.post(
        "/v1/admin/attestors/prod/test", json={"evidence": other}, headers=broker.admin_headers()
    )
    assert answer.json()["matched"] is False and answer.json()["missed"] == "0:namespace"
    bad = broker.client.post(
        "/v1/admin/attestors/prod/test", json={"evidence": "x.y.z"}, headers=broker.admin_headers()
    )
    assert bad.status_code == 400 and "evidence refused" in bad.json()["detail"]


def test_refused_attestation_in_the_sdk_is_unauthorized(
    broker: Deployment, issuer: OidcIssuer, ca: IssuerCA
) -> None:
    k8s_attestor(broker, issuer, ca)
    expired = mint(issuer.keys[0], k8s_claims(issuer.url, ISSUER, broker.now() - 1000))
    with pytest.raises(Unauthorized):
        Agent.from_oidc(broker.url, expired, "o", "t", ["read:invoices:1"], kind="k8s_sat")
