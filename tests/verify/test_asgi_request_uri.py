"""The URI a DPoP proof must name at the ASGI middleware is the request's own URL (RFC 9449
section 4.3 point 9), as the broker builds it: the ASGI ``path`` (which holds the
``root_path`` already) with ``?`` and ``#`` percent-encoded, never read as a query or a
fragment that the comparison then drops. Tokens are signed here and the keys served in
memory: no broker, no network."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
import nacl.signing

from tasklease.rules import jws
from tasklease.rules.binding import access_token_hash
from tasklease.verify import Verifier
from tasklease.verify.asgi import TaskleaseAuthMiddleware

NOW = 1_767_225_600
ORIGIN = "https://api.example"
AUDIENCE = "https://api.example"
BROKER = nacl.signing.SigningKey(hashlib.sha256(b"broker").digest())
KID = jws.jwk_thumbprint(bytes(BROKER.verify_key))
HOLDER = nacl.signing.SigningKey(hashlib.sha256(b"holder").digest())
JKT = jws.jwk_thumbprint(bytes(HOLDER.verify_key))
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
        "cnf": {"jkt": JKT},
    }
    return jws.encode(
        json.dumps(payload, separators=(",", ":")).encode(), typ="at+jwt", kid=KID, key=BROKER
    )


def _proof(token: str, htu: str, jti: str) -> str:
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(HOLDER.verify_key))},
    }
    claims = {"jti": jti, "htm": "GET", "htu": htu, "iat": NOW + 1, "ath": access_token_hash(token)}
    h = jws.b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    c = jws.b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signature = HOLDER.sign(f"{h}.{c}".encode()).signature
    return f"{h}.{c}.{jws.b64url_encode(signature)}"


def _call(path: str, token: str, proof: str, *, root_path: str = "") -> int:
    """Status of GET ``path`` through the middleware (the app answers 200)."""
    verifier = Verifier(
        "https://broker.invalid",
        audience=AUDIENCE,
        feed=False,
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=JWKS)),
    )
    verifier.start()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = TaskleaseAuthMiddleware(app, verifier=verifier, origins=[ORIGIN])
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "server": ("10.0.0.1", 8443),
        "headers": [
            (b"authorization", f"DPoP {token}".encode()),
            (b"dpop", proof.encode()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    try:
        asyncio.run(middleware(scope, receive, send))
    finally:
        verifier.close()
    return int(sent[0]["status"])


def test_a_proof_is_accepted_for_the_url_it_names() -> None:
    token = _token()
    assert _call("/files/a", token, _proof(token, f"{ORIGIN}/files/a", "p1")) == 200


def test_a_question_mark_in_the_path_is_not_a_query_the_proof_may_omit() -> None:
    # GET /files/a%3F/../b arrives as the ASGI path "/files/a?/../b": a proof for
    # /files/a does not name that URL.
    token = _token()
    assert _call("/files/a?/../b", token, _proof(token, f"{ORIGIN}/files/a", "p2")) == 401
    assert _call("/files/a#x", token, _proof(token, f"{ORIGIN}/files/a", "p3")) == 401
    # The same URL, written as a client writes it, is accepted.
    proof = _proof(token, f"{ORIGIN}/files/a%3F/../b", "p4")
    assert _call("/files/a?/../b", token, proof) == 200


def test_the_root_path_is_counted_once() -> None:
    # Behind a proxy that strips /api, the server's path already includes the root path
    # (ASGI; uvicorn --root-path): the request's URL is https://api.example/api/x.
    token = _token()
    assert _call("/api/x", token, _proof(token, f"{ORIGIN}/api/x", "p5"), root_path="/api") == 200
    other = _proof(token, f"{ORIGIN}/api/api/x", "p6")
    assert _call("/api/x", token, other, root_path="/api") == 401


def test_a_percent_sign_in_the_path_is_not_read_as_an_encoding() -> None:
    # GET /files/a%2520b arrives as the ASGI path "/files/a%20b" (the file "a%20b"): a
    # proof for /files/a%20b (the file "a b") does not name that URL.
    token = _token()
    assert _call("/files/a%20b", token, _proof(token, f"{ORIGIN}/files/a%20b", "p7")) == 401
    # The URL of the file "a b", as a client writes it, is accepted; so is the other's.
    assert _call("/files/a b", token, _proof(token, f"{ORIGIN}/files/a%20b", "p8")) == 200
    assert _call("/files/a%20b", token, _proof(token, f"{ORIGIN}/files/a%2520b", "p9")) == 200
    assert _call("/files/\u00e9", token, _proof(token, f"{ORIGIN}/files/%C3%A9", "p10")) == 200
