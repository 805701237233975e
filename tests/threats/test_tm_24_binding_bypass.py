# Would fail if: the binding check accepted a token carrying `cnf.jkt` without a valid,
# fresh, single-use DPoP proof by that key for this request (for example by letting the
# `Bearer` scheme through for a bound token).
"""TM-24 — holder-binding bypass: a DPoP-bound token is stolen (a log, a proxy, a
compromised resource server) and replayed without the holder's private key: as a bearer
token, with the thief's own proof, with a proof captured from the holder's traffic, or
with a proof made for another request.

A bound token works only with a fresh proof by the key its ``cnf.jkt`` names, for this
method, this URI and this very token, once. Delegations to a bound agent are bound to the
delegate's key. Certificate-bound tokens (RFC 8705) are tested over real mTLS sockets in
tests/security/test_tls.py and tests/client/test_mtls.py.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts
from nacl.signing import SigningKey
from threat_support import dpop_proof, refused

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


def _register_bound(broker: RunningBroker) -> tuple[str, SigningKey, str]:
    """A DPoP-bound agent: its token, its proof key and its SPIFFE ID."""
    key = SigningKey.generate()
    body, _ = broker.register_body(broker.launch_token(SCOPE), SCOPE)
    proof = dpop_proof(key, "POST", f"{broker.url}/v1/register")
    resp = broker.post("/v1/register", json=body, headers={"DPoP": proof})
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "DPoP"
    token = resp.json()["access_token"]
    assert "jkt" in jwt_parts(token)[1]["cnf"]
    return token, key, resp.json()["agent_id"]


def _renew(broker: RunningBroker, token: str, proof: str | None, scheme: str = "DPoP") -> Any:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return broker.post("/v1/token/renew", headers=headers)


def test_a_stolen_bound_token_is_useless_without_the_key(broker: RunningBroker) -> None:
    token, key, _ = _register_bound(broker)
    renew_url = f"{broker.url}/v1/token/renew"
    thief = SigningKey.generate()
    attempts = [
        ("Bearer", None, "bearer"),
        ("DPoP", None, "proof missing"),
        ("DPoP", dpop_proof(thief, "POST", renew_url, token=token), "another key"),
        ("DPoP", dpop_proof(key, "GET", renew_url, token=token), "htm"),
        ("DPoP", dpop_proof(key, "POST", f"{broker.url}/v1/delegate", token=token), "htu"),
        (
            "DPoP",
            dpop_proof(key, "POST", "https://elsewhere.example/v1/token/renew", token=token),
            "htu",
        ),
        ("DPoP", dpop_proof(key, "POST", renew_url, token=token + "x"), "ath"),
        ("DPoP", dpop_proof(key, "POST", renew_url), "ath"),
        ("DPoP", dpop_proof(key, "POST", renew_url, token=token, iat=time.time() - 3600), "iat"),
    ]
    for scheme, proof, reason in attempts:
        resp = _renew(broker, token, proof, scheme)
        refused(broker, resp, 401, "unauthorized", reason)
    # The holder, with a fresh proof of its own, is unaffected.
    resp = _renew(broker, token, dpop_proof(key, "POST", renew_url, token=token))
    assert resp.status_code == 200, resp.text
    assert jwt_parts(resp.json()["access_token"])[1]["cnf"] == jwt_parts(token)[1]["cnf"]


def test_a_captured_proof_cannot_be_replayed(broker: RunningBroker) -> None:
    token, key, _ = _register_bound(broker)
    url = f"{broker.url}/v1/token/release"
    captured = dpop_proof(key, "POST", url, token=token)
    # The resource-server check spends the proof just like the broker's own routes do.
    check = broker.post(
        "/v1/token/validate",
        json={"token": token, "dpop": captured, "htm": "POST", "htu": url},
    )
    assert check.json()["valid"] is True
    again = broker.post(
        "/v1/token/validate",
        json={"token": token, "dpop": captured, "htm": "POST", "htu": url},
    )
    assert again.json()["valid"] is False
    resp = broker.post(
        "/v1/token/release", headers={"Authorization": f"DPoP {token}", "DPoP": captured}
    )
    refused(broker, resp, 401, "unauthorized", "replay")
    assert broker.post("/v1/token/validate", json={"token": token}).json()["valid"] is False


def test_a_captured_proof_raced_against_its_holder_wins_once(broker: RunningBroker) -> None:
    # The same proof sent eight times at once: each request's checks pass before any has
    # recorded the proof, so only its record, in the store, can tell them apart.
    token, key, _ = _register_bound(broker)
    proof = dpop_proof(key, "POST", f"{broker.url}/v1/token/renew", token=token)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _i: _renew(broker, token, proof), range(8)))
    assert sorted(r.status_code for r in responses) == [200] + [401] * 7
    for resp in responses:
        if resp.status_code == 401:
            # Refused as a replay, or (checked after the winner's renewal) as revoked.
            event = refused(broker, resp, 401, "unauthorized")
            assert "replay" in event["detail"] or "revoked" in event["detail"], event


def test_a_forwarded_proof_validated_concurrently_is_valid_once(broker: RunningBroker) -> None:
    # A resource server (or two replicas of one) forwarding one captured proof eight times
    # at once: the proof is recorded before each answer, so one is valid.
    token, key, _ = _register_bound(broker)
    url = "https://files.example/reports/7"
    body = {"token": token, "dpop": dpop_proof(key, "GET", url, token=token)}
    body |= {"htm": "GET", "htu": url}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _i: broker.post("/v1/token/validate", json=body), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert sorted(a.json()["valid"] for a in answers) == [False] * 7 + [True]


def test_a_delegation_to_a_bound_agent_is_bound_to_the_delegate(broker: RunningBroker) -> None:
    _, delegate_key, delegate_id = _register_bound(broker)
    delegator = broker.register(SCOPE)
    resp = broker.delegate(delegator.access_token, delegate_id, ["read:tickets:1"])
    assert resp.status_code == 200, resp.text
    delegated = resp.json()["access_token"]
    assert jwt_parts(delegated)[1]["cnf"]["jkt"]
    url = f"{broker.url}/v1/token/renew"
    refused(broker, _renew(broker, delegated, None, "Bearer"), 401, "unauthorized")
    ok = _renew(broker, delegated, dpop_proof(delegate_key, "POST", url, token=delegated))
    assert ok.status_code == 200, ok.text


def test_a_bad_registration_proof_consumes_nothing(broker: RunningBroker) -> None:
    launch = broker.launch_token(SCOPE)
    body, _ = broker.register_body(launch, SCOPE)
    wrong = dpop_proof(SigningKey.generate(), "POST", f"{broker.url}/v1/delegate")
    resp = broker.post("/v1/register", json=body, headers={"DPoP": wrong})
    assert resp.status_code == 400, resp.text  # invalid_dpop_proof (RFC 9449 section 5)
    assert resp.json()["error"] == "invalid_dpop_proof"
    assert "access_token" not in resp.json()
    broker.register(SCOPE, launch_token=launch)
