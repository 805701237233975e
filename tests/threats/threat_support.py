"""Helpers for the threat suite: refusals traced to their audit event, hand-made JWSs and
DPoP proofs, and a look at the whole audit log of a broker."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker, assert_problem, b64, b64url
from nacl.signing import SigningKey

DENIAL_PREFIX = "den_"


def audit_events(broker: RunningBroker, **filters: str) -> list[dict[str, Any]]:
    """Every audit event matching ``filters`` (query parameters), in chain order."""
    found: list[dict[str, Any]] = []
    while True:
        page = broker.get(
            "/v1/audit/events",
            params={**filters, "limit": "1000", "offset": str(len(found))},
            headers=broker.admin_headers(),
        )
        assert page.status_code == 200, page.text
        body = page.json()
        found += body["events"]
        if not body["events"] or len(found) >= body["total"]:
            return found


def denial_event(broker: RunningBroker, resp: httpx.Response) -> dict[str, Any]:
    """The refusal names a ``denial_id``; it leads to exactly one audit event."""
    denial = resp.json().get("denial_id")
    assert isinstance(denial, str), f"no denial_id: {resp.text}"
    assert denial.startswith(DENIAL_PREFIX) and len(denial) == 20, denial
    hits = [
        e
        for e in audit_events(broker, outcome="denied")
        if e["detail"].endswith(f"denial={denial}")
    ]
    assert len(hits) == 1, (denial, hits)
    return hits[0]


def refused(
    broker: RunningBroker, resp: httpx.Response, status: int, code: str, *reason: str
) -> dict[str, Any]:
    """A problem with ``status``/``code``, nothing issued, and one audit event whose
    detail holds every ``reason`` fragment; returns that event."""
    body = assert_problem(resp, status, code)
    for issued in ("access_token", "launch_token", "token"):
        assert issued not in body, body
    event = denial_event(broker, resp)
    assert event["outcome"] == "denied"
    for fragment in reason:
        assert fragment in event["detail"], (fragment, event["detail"])
    return event


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def compact(header: dict[str, Any], payload: dict[str, Any], key: SigningKey | None) -> str:
    """A compact JWS with any header and payload, signed by ``key`` (or unsigned)."""
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode()).signature if key is not None else b""
    return signing_input + "." + b64url(signature)


def dpop_proof(
    key: SigningKey,
    htm: str,
    htu: str,
    *,
    token: str | None = None,
    jti: str | None = None,
    iat: float | None = None,
) -> str:
    """An RFC 9449 proof by ``key`` for one request (``ath`` when ``token`` is given)."""
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(key.verify_key))},
    }
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_hex(16),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time() if iat is None else iat),
    }
    if token is not None:
        claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    return compact(header, claims, key)


def resume_body(broker: RunningBroker, agent_id: str, key: Ed25519PrivateKey) -> dict[str, str]:
    """A ``POST /v1/resume`` body: a fresh nonce signed by ``key``."""
    nonce = broker.nonce()
    return {"agent_id": agent_id, "nonce": nonce, "signature": b64(key.sign(bytes.fromhex(nonce)))}
