"""The JWT attack suite against a real broker process over loopback HTTP.

Every attack must be refused AND audited: the problem body carries a ``denial_id`` and the
audit log holds exactly one event ending ``denial=<id>`` with the precise reason, while
the outward ``detail`` stays generic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker
from nacl.signing import SigningKey
from security_support import b64url, dpop_proof, forge, token_parts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def signer(broker: RunningBroker) -> tuple[str, SigningKey]:
    kid, key = broker.signing_key()
    assert isinstance(key, Ed25519PrivateKey)
    return kid, SigningKey(key.private_bytes_raw())


@pytest.fixture(scope="module")
def agent(broker: RunningBroker) -> Any:
    return broker.register(["read:data:*"])


def denial_event(broker: RunningBroker, resp: httpx.Response) -> dict[str, Any]:
    """The refusal's problem body has a denial_id; return its one audit event."""
    body = resp.json()
    denial = body["denial_id"]
    assert denial.startswith("den_") and len(denial) == 20
    found = broker.get(
        "/v1/audit/events?outcome=denied&limit=1000", headers=broker.admin_headers()
    ).json()["events"]
    hits = [e for e in found if e["detail"].endswith(f"denial={denial}")]
    assert len(hits) == 1, body
    return hits[0]


def refused(
    broker: RunningBroker,
    token: str,
    reason: str,
    *,
    path: str = "/v1/token/renew",
    status: int = 401,
    **kwargs: Any,
) -> dict[str, Any]:
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {token}"})
    resp = broker.post(path, headers=headers, **kwargs)
    assert resp.status_code == status, resp.text
    if status == 401:
        assert resp.json()["detail"] == "token verification failed"
    event = denial_event(broker, resp)
    assert reason in event["detail"], event["detail"]
    assert token not in event["detail"]
    return event


def _claims(agent: Any, **changes: Any) -> dict[str, Any]:
    claims = token_parts(agent.access_token)[1]
    claims.update(changes)
    claims["jti"] = secrets.token_hex(16)
    return claims


def _header(kid: str, **changes: Any) -> dict[str, Any]:
    return {"alg": "EdDSA", "typ": "at+jwt", "kid": kid, **changes}


# --- header attacks ---------------------------------------------------------------------------


def test_alg_none(broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any) -> None:
    kid, _ = signer
    token = forge({"alg": "none", "typ": "at+jwt", "kid": kid}, _claims(agent), None)
    refused(broker, token, "empty segment")
    with_sig = token + b64url(secrets.token_bytes(64))
    refused(broker, with_sig, "alg not allowed")


def test_hs256_keyed_with_our_public_key(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(_claims(agent)).encode())
    )
    mac = hmac.new(bytes(key.verify_key), signing_input.encode(), hashlib.sha256).digest()
    refused(broker, signing_input + "." + b64url(mac), "alg not allowed")


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        ("unknownkid0123", "unknown kid"),
        ("../../../../etc/passwd", "kid malformed"),
        ("x' OR '1'='1", "kid malformed"),
        ("k; DROP TABLE agents;--", "kid malformed"),
    ],
)
def test_hostile_kids(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any, kid: str, reason: str
) -> None:
    _, key = signer
    refused(broker, forge(_header(kid), _claims(agent), key), reason)


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(b"\x01" * 32)}},
        {"crit": ["urn:attacker:ext"], "urn:attacker:ext": True},
    ],
)
def test_key_pointing_and_crit_headers_are_refused_never_followed(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any, extra: dict[str, Any]
) -> None:
    kid, key = signer
    token = forge(_header(kid, **extra), _claims(agent), key)
    event = refused(broker, token, "unexpected header parameter")
    assert min(k for k in extra) in event["detail"]


def test_wrong_typ_admin_as_agent_and_agent_as_admin(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    refused(broker, forge(_header(kid, typ="JWT"), _claims(agent), key), "typ not allowed")
    # A real admin token where only agent tokens may go, and the reverse.
    event = refused(broker, broker.admin_token(), "may not renew", status=403)
    assert event["event_type"] == "renew_denied"
    body = {"level": "token", "target": "0" * 32}
    event = refused(
        broker, agent.access_token, "not accepted", path="/v1/revoke", status=403, json=body
    )
    assert event["event_type"] == "scope_violation"


# --- payload and signature attacks ----------------------------------------------------------


def test_tampered_payload_with_original_signature(broker: RunningBroker, agent: Any) -> None:
    head, _, sig = agent.access_token.split(".")
    wider = _claims(agent, scope=["admin:revoke:*"])
    token = f"{head}.{b64url(json.dumps(wider).encode())}.{sig}"
    refused(broker, token, "bad signature")


def test_signature_from_another_ed25519_key(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, _ = signer
    refused(broker, forge(_header(kid), _claims(agent), SigningKey.generate()), "bad signature")


def test_truncated_or_padded_base64(broker: RunningBroker, agent: Any) -> None:
    head, body, sig = agent.access_token.split(".")
    refused(broker, f"{head}.{body}.{sig[:-1]}", "signature")
    refused(broker, f"{head}.{body}.{sig}=", "invalid base64url character")
    # "=" inside is no b64token (RFC 6750 section 2.1): a malformed request.
    refused(broker, f"{head}==.{body}.{sig}", "not one token", status=400)
    refused(broker, f"{head}.{body[:-2]}.{sig}", "")


def test_duplicate_json_keys(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    header = f'{{"alg":"EdDSA","alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}'.encode()
    payload = json.dumps(_claims(agent)).encode()
    signing_input = b64url(header) + "." + b64url(payload)
    token = signing_input + "." + b64url(key.sign(signing_input.encode()).signature)
    refused(broker, token, "duplicate key in header")
    dup_payload = payload[:-1] + b', "sub": "spiffe://evil/agent/x"}'
    signing_input = b64url(json.dumps(_header(kid)).encode()) + "." + b64url(dup_payload)
    token = signing_input + "." + b64url(key.sign(signing_input.encode()).signature)
    refused(broker, token, "duplicate key in payload")


def test_time_claims_beyond_skew(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    now = int(time.time())
    cases = [
        (dict(iat=now - 300, nbf=now - 300, exp=now - 100), "token expired"),
        # No leeway on exp: dead from the instant of its expiry (the skew is for nbf/iat).
        (dict(iat=now - 60, nbf=now - 60, exp=now), "token expired"),
        (dict(iat=now, nbf=now + 100, exp=now + 200), "not yet valid"),
        (dict(iat=now + 1000, nbf=now, exp=now + 1060), "issued in the future"),
    ]
    for changes, reason in cases:
        refused(broker, forge(_header(kid), _claims(agent, **changes), key), reason)


def test_wrong_issuer_and_audience(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    refused(broker, forge(_header(kid), _claims(agent, iss="evil"), key), "issuer mismatch")
    admin_claims = token_parts(broker.admin_token())[1]
    admin_claims.update(aud=["somebody-else"], jti=secrets.token_hex(16))
    wrong_aud = forge(_header(kid, typ="tasklease-admin+jwt"), admin_claims, key)
    refused(
        broker,
        wrong_aud,
        "audience mismatch",
        path="/v1/revoke",
        json={"level": "token", "target": "0" * 32},
    )
    # Resource servers: a token for one resource fails every other's check.
    bound = broker.post(
        "/v1/register",
        json={
            **broker.register_body(broker.launch_token(["read:data:*"]), ["read:data:*"])[0],
            "resource": "https://mcp.example/files",
        },
    ).json()["access_token"]
    ok = broker.post(
        "/v1/token/validate", json={"token": bound, "audience": "https://mcp.example/files"}
    ).json()
    assert ok["valid"] is True and ok["claims"]["aud"] == ["https://mcp.example/files"]
    for other in ("https://mcp.example/mail", None):
        body = {"token": bound} if other is None else {"token": bound, "audience": other}
        assert broker.post("/v1/token/validate", json=body).json()["valid"] is False


# --- delegation chain attacks -----------------------------------------------------------------


def _chain_claims(agent: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    encoded = json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode()
    return _claims(agent, delegation_chain=records, chain_hash=hashlib.sha256(encoded).hexdigest())


def test_forged_delegation_record(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    other = broker.register(["read:data:*"])
    record = {
        "agent": "spiffe://tasklease.local/agent/orch/task/forged",
        "scope": ["read:data:*"],
        "delegated_at": "2030-01-01T00:00:00Z",
        "signature": secrets.token_hex(64),
    }
    token = forge(_header(kid), _chain_claims(agent, [record]), key)
    body = {"delegate_to": other.agent_id, "scope": ["read:data:x"]}
    event = refused(broker, token, "", path="/v1/delegate", json=body)
    assert event["event_type"] == "token_auth_failed"
    # Refused by the chain's consistency checks or by the record's signature check.
    detail = event["detail"]
    assert "chain" in detail or "act claim" in detail or "broker signature" in detail, detail


def test_chain_longer_than_the_depth_limit(
    broker: RunningBroker, signer: tuple[str, SigningKey], agent: Any
) -> None:
    kid, key = signer
    records = [
        {
            "agent": f"spiffe://tasklease.local/agent/o/t/{i}",
            "scope": ["read:data:*"],
            "delegated_at": "2030-01-01T00:00:00Z",
            "signature": "00" * 64,
        }
        for i in range(6)
    ]
    token = forge(_header(kid), _chain_claims(agent, records), key)
    refused(broker, token, "depth limit")


def test_oversized_token_is_refused_before_any_crypto(broker: RunningBroker) -> None:
    token = "eyJ" + "A" * 9000 + ".e30.sig"
    refused(broker, token, "token too large")


def test_a_path_that_grows_when_redacted_keeps_its_denial_id(broker: RunningBroker) -> None:
    """The refused path is in the event's detail; redacting ``secret=a`` lengthens it past
    the cap, which must not cut the denial id off (nor leave the stranger untraced)."""
    for headers in ({}, {"Authorization": "Bearer x.y.z"}):
        resp = broker.get("/v1/admin/apps/" + "secret=a," * 200, headers=headers)
        assert resp.status_code == 401, resp.text
        assert denial_event(broker, resp)["detail"].endswith(f"denial={resp.json()['denial_id']}")


# --- bound tokens over HTTP (DPoP; certificates in test_tls.py) -----------------------------


def test_dpop_bound_token_over_http(broker: RunningBroker) -> None:
    key = SigningKey.generate()
    body, _ = broker.register_body(broker.launch_token(["read:data:*"]), ["read:data:*"])
    proof = dpop_proof(key, htu=f"{broker.url}/v1/register", iat=time.time())
    resp = broker.post("/v1/register", json=body, headers={"DPoP": proof})
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "DPoP"
    token = resp.json()["access_token"]
    assert "jkt" in token_parts(token)[1]["cnf"]
    renew_url = f"{broker.url}/v1/token/renew"

    def proof_for(signing: SigningKey, **extra: Any) -> str:
        return dpop_proof(signing, htu=renew_url, iat=time.time(), token=token, **extra)

    refused(broker, token, "presented as a bearer token")
    refused(broker, token, "DPoP proof missing", headers={"Authorization": f"DPoP {token}"})
    wrong = proof_for(SigningKey.generate())
    refused(
        broker,
        token,
        "another key",
        headers={"Authorization": f"DPoP {token}", "DPoP": wrong},
    )
    good = proof_for(key)
    headers = {"Authorization": f"DPoP {token}", "DPoP": good}
    # A resource server checking the same proof for its own request first...
    check = broker.post(
        "/v1/token/validate",
        json={"token": token, "dpop": proof_for(key), "htm": "POST", "htu": renew_url},
    ).json()
    assert check["valid"] is True
    assert broker.post("/v1/token/validate", json={"token": token}).json()["valid"] is False
    renewed = broker.post("/v1/token/renew", headers=headers)
    assert renewed.status_code == 200, renewed.text
    assert token_parts(renewed.json()["access_token"])[1]["cnf"] == token_parts(token)[1]["cnf"]
    # The same proof again: a replay.
    new = renewed.json()["access_token"]
    replay = {"Authorization": f"DPoP {new}", "DPoP": good}
    refused(broker, new, "", headers=replay)


def test_rfc7009_and_rfc7662_over_http(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:*"])
    form = {"token": agent.access_token, "token_type_hint": "access_token"}
    intro = broker.post(
        "/v1/introspect", data={"token": agent.access_token}, headers=broker.admin_headers()
    )
    assert intro.status_code == 200 and intro.json()["active"] is True
    for token in ("garbage", "tlr_" + "A" * 43):
        resp = broker.post("/v1/token/revoke", data={"token": token}, headers=agent.bearer)
        assert (resp.status_code, resp.json()) == (200, {})
    resp = broker.post("/v1/token/revoke", data=form, headers=agent.bearer)
    assert (resp.status_code, resp.json()) == (200, {})
    again = broker.post("/v1/token/revoke", data=form, headers=agent.bearer)
    assert again.status_code == 401  # its credential is the revoked token itself
    intro = broker.post(
        "/v1/introspect", data={"token": agent.access_token}, headers=broker.admin_headers()
    )
    assert intro.json() == {"active": False}
    dup = broker.post(
        "/v1/introspect",
        content=b"token=a&token=b",
        headers={**broker.admin_headers(), "content-type": "application/x-www-form-urlencoded"},
    )
    assert dup.status_code == 400
    _ = Path  # imported for type hints in helpers
