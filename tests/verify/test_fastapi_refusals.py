"""A FastAPI route guarded by ``require_scope`` or ``require_grant`` refuses as RFC 6750
section 3 asks, with or without ``install_problem_handler``: a 403 carries a
``WWW-Authenticate`` challenge with ``error="insufficient_scope"``, and a broker that
cannot count a call is a 503 (fail closed, retry later), not a 401 that tells the client
its token is bad. Tokens are signed here and the keys served in memory: no broker."""

from __future__ import annotations

import hashlib
import json

import httpx
import nacl.signing
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from tasklease.rules import jws
from tasklease.verify import VerifiedToken, Verifier
from tasklease.verify.asgi import (
    TaskleaseAuthMiddleware,
    install_problem_handler,
    require_grant,
    require_scope,
)

NOW = 1_767_225_600
AUDIENCE = "https://api.example"
BROKER = nacl.signing.SigningKey(hashlib.sha256(b"broker").digest())
KID = jws.jwk_thumbprint(bytes(BROKER.verify_key))
JWKS = {
    "keys": [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": KID,
            "x": jws.b64url_encode(bytes(BROKER.verify_key)),
        }
    ]
}
PAY = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": ["https://pay.example/payees/P"],
    "limits": {"max_calls": 3},
}


class _Clock:
    def now(self) -> float:
        return NOW + 1


def _token() -> str:
    payload = {
        "iss": "tasklease",
        "sub": "spiffe://example.org/agent/o/t/a",
        "client_id": "spiffe://example.org/agent/o/t/a",
        "aud": [AUDIENCE],
        "exp": NOW + 300,
        "nbf": NOW,
        "iat": NOW,
        "jti": "j" * 32,
        "scope": "read:files:*",
        "authorization_details": [PAY],
    }
    return jws.encode(
        json.dumps(payload, separators=(",", ":")).encode(), typ="at+jwt", kid=KID, key=BROKER
    )


def _broker(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/token/calls":
        return httpx.Response(502)  # the broker is away: the call cannot be counted
    return httpx.Response(200, json=JWKS)


def _client(*, handler: bool) -> TestClient:
    verifier = Verifier(
        "https://broker.invalid",
        audience=AUDIENCE,
        feed=False,
        clock=_Clock(),
        transport=httpx.MockTransport(_broker),
    )
    app = FastAPI()
    app.add_middleware(TaskleaseAuthMiddleware, verifier=verifier)
    if handler:
        install_problem_handler(app)
    pay = require_grant("resource_access", action="pay", location="https://pay.example/payees/P")

    @app.get("/write")
    def write(token: VerifiedToken = Depends(require_scope("write:files:1"))) -> str:
        return token.sub

    @app.post("/pay")
    def send(token: VerifiedToken = Depends(pay)) -> str:
        return token.sub

    return TestClient(app)


@pytest.mark.parametrize("handler", [False, True])
def test_a_missing_scope_is_a_403_with_its_challenge(handler: bool) -> None:
    with _client(handler=handler) as client:
        answer = client.get("/write", headers={"Authorization": f"Bearer {_token()}"})
    assert answer.status_code == 403
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="insufficient_scope"' in challenge
    assert 'scope="write:files:1"' in challenge


@pytest.mark.parametrize("handler", [False, True])
def test_a_call_the_broker_cannot_count_is_a_503(handler: bool) -> None:
    with _client(handler=handler) as client:
        answer = client.post("/pay", headers={"Authorization": f"Bearer {_token()}"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "www-authenticate" not in answer.headers
