# Would fail if: the JWS decoder took the algorithm from the token's `alg` header (for
# example accepting `none` or an HMAC keyed with our published public key) instead of
# holding every token to its own EdDSA allow-list.
"""TM-08 — algorithm confusion and hostile JOSE headers: the token tells the verifier how
(``alg``) and with which key (``kid``, ``jku``, ``x5u``, ``jwk``) to check it.

The broker decides both: ``alg`` must be ``EdDSA``; ``kid`` must name one of its own keys
and look like a key id; the header may carry nothing else. Key-pointing headers are
refused, never followed, so a token cannot make the broker fetch a URL (no SSRF): the
listener below counts the requests it receives and must end with none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from e2e_support import RunningBroker, b64url, b64url_decode, jwt_parts
from nacl.signing import SigningKey
from threat_support import bearer, compact, refused

pytestmark = pytest.mark.slow


class _Trap(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Trap.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def trap() -> Iterator[str]:
    """A URL on loopback where a fetched key location would land."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def genuine(broker: RunningBroker) -> Any:
    return broker.register(["read:tickets:4711"])


def _claims(genuine: Any) -> dict[str, Any]:
    payload = jwt_parts(genuine.access_token)[1]
    return {**payload, "scope": ["write:tickets:*"]}


def _our_kid_and_public_key(broker: RunningBroker) -> tuple[str, bytes]:
    jwk = broker.get("/.well-known/jwks.json").json()["keys"][0]
    return jwk["kid"], b64url_decode(jwk["x"])


def _hmac_token(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = compact(header, payload, None)[:-1]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def _refused(broker: RunningBroker, token: str, reason: str) -> None:
    resp = broker.post("/v1/token/renew", headers=bearer(token))
    refused(broker, resp, 401, "unauthorized", reason)
    assert resp.json()["detail"] == "token verification failed"
    assert not broker.is_valid(token)


def test_alg_none(broker: RunningBroker, genuine: Any) -> None:
    kid, _ = _our_kid_and_public_key(broker)
    for alg in ("none", "None", "NONE"):
        unsigned = compact({"alg": alg, "typ": "at+jwt", "kid": kid}, _claims(genuine), None)
        _refused(broker, unsigned, "empty segment")
        with_junk = unsigned + b64url(b"\x00" * 64)
        _refused(broker, with_junk, "alg not allowed")


def test_hmac_keyed_with_our_published_public_key(broker: RunningBroker, genuine: Any) -> None:
    kid, public = _our_kid_and_public_key(broker)
    for alg in ("HS256", "HS512"):
        header = {"alg": alg, "typ": "at+jwt", "kid": kid}
        for secret in (public, b64url(public).encode(), base64.b64encode(public)):
            _refused(broker, _hmac_token(header, _claims(genuine), secret), "alg not allowed")


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "Ed25519", "eddsa", "EdDSA "])
def test_every_other_alg_is_refused_even_when_the_signature_is_ed25519(
    broker: RunningBroker, genuine: Any, alg: str
) -> None:
    attacker = SigningKey.generate()
    kid, _ = _our_kid_and_public_key(broker)
    token = compact({"alg": alg, "typ": "at+jwt", "kid": kid}, _claims(genuine), attacker)
    _refused(broker, token, "alg not allowed")


@pytest.mark.parametrize("pointer", ["jku", "x5u", "jwk", "x5c"])
def test_key_pointing_headers_are_refused_and_never_fetched(
    broker: RunningBroker, genuine: Any, trap: str, pointer: str
) -> None:
    attacker = SigningKey.generate()
    attacker_jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(attacker.verify_key))}
    value: Any = {
        "jku": f"{trap}/jwks.json",
        "x5u": f"{trap}/cert.pem",
        "jwk": attacker_jwk,
        "x5c": [base64.b64encode(b"not a certificate").decode()],
    }[pointer]
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker-key", pointer: value}
    _refused(broker, compact(header, _claims(genuine), attacker), "header")
    kid, _ = _our_kid_and_public_key(broker)
    _refused(broker, compact({**header, "kid": kid}, _claims(genuine), attacker), "header")
    assert _Trap.hits == []


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        ("../../../keys/signing", "kid malformed"),
        ("x' OR '1'='1", "kid malformed"),
        ("k; DROP TABLE agents;--", "kid malformed"),
        ("a" * 129, "kid malformed"),
        ("0123456789abcdefunknown", "unknown kid"),
    ],
    ids=["path", "sql-quote", "sql-statement", "too-long", "unknown"],
)
def test_hostile_kids_reach_no_lookup(
    broker: RunningBroker, genuine: Any, kid: str, reason: str
) -> None:
    attacker = SigningKey.generate()
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    _refused(broker, compact(header, _claims(genuine), attacker), reason)


def test_crit_and_unknown_headers_are_refused(broker: RunningBroker, genuine: Any) -> None:
    kid, _ = _our_kid_and_public_key(broker)
    attacker = SigningKey.generate()
    for extra in ({"crit": ["exp"]}, {"b64": False}, {"zip": "DEF"}):
        header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid, **extra}
        _refused(broker, compact(header, _claims(genuine), attacker), "header")
    # The genuine token, with its exact header, is still fine.
    assert broker.is_valid(genuine.access_token)
