"""What the conformance suite shares: the broker under test, agents, proofs, and how a test
declares the status of the requirement it checks (docs/conformance.md is built from them).

Each test module covers one specification; its docstring's first line names it. Each test
is named ``test_<spec>_s<section>_<requirement>`` and its docstring states the
requirement. A test decorated with :func:`deviation` checks a deliberate difference (the
reason is the decorator's argument); the module's ``NOT_APPLICABLE`` maps requirements
that do not apply to tasklease to why, and ``COVERED_ELSEWHERE`` maps requirements tested
by another suite to that suite's test. ``scripts/gen_conformance.py`` reads all of it
from the source (never importing the modules).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_HTTP = str(Path(__file__).resolve().parents[1] / "http")
if _HTTP not in sys.path:
    sys.path.insert(0, _HTTP)

from e2e_support import RunningBroker  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])

ISSUER = "https://broker.conformance.example"
DEFAULT_AUDIENCE = "tasklease"
OTHER_AUDIENCE = "https://accepted-too.example/api"
BROKER_ENV = {
    "TASKLEASE_ADMIN_AUTH_BURST": "1000",
    "TASKLEASE_APP_AUTH_BURST": "1000",
    "TASKLEASE_ISSUER": ISSUER,
    # Two audiences: a token that names no resource is for the first only (RFC 8707).
    "TASKLEASE_AUDIENCE": f"{DEFAULT_AUDIENCE},{OTHER_AUDIENCE}",
}
SCOPE = ["read:data:42", "write:data:42"]


def deviation(reason: str) -> Callable[[F], F]:
    """Mark a test as checking a deliberate deviation from its specification (``reason``
    goes to docs/conformance.md and docs/compatibility.md says why at length)."""

    def mark(test: F) -> F:
        test.conformance_deviation = reason  # type: ignore[attr-defined]
        return test

    return mark


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, unverified."""
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def compact(header: dict[str, Any], payload: dict[str, Any], key: nacl.signing.SigningKey) -> str:
    """A compact JWS with any header and payload, signed by ``key`` (Ed25519)."""
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    return signing_input + "." + b64url(key.sign(signing_input.encode()).signature)


def dpop_proof(
    key: nacl.signing.SigningKey,
    *,
    htm: str,
    htu: str,
    token: str | None = None,
    iat: float | None = None,
    jti: str | None = None,
    typ: str = "dpop+jwt",
    extra: dict[str, Any] | None = None,
) -> str:
    """An RFC 9449 proof (section 4.2) signed by ``key``."""
    header = {
        "typ": typ,
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(key.verify_key))},
    }
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_urlsafe(16),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time() if iat is None else iat),
    }
    if token is not None:
        claims["ath"] = token_hash(token)
    claims.update(extra or {})
    return compact(header, claims, key)


@dataclass
class Agent:
    agent_id: str
    token: str
    key: Ed25519PrivateKey
    dpop: nacl.signing.SigningKey | None = None
    token_type: str = "Bearer"

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The registered Ed25519 key, as PyNaCl holds it."""
        raw = self.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return nacl.signing.SigningKey(raw)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Kit:
    """The ceremonies against one running broker, over its loopback HTTP."""

    def __init__(self, broker: RunningBroker) -> None:
        self.broker = broker
        self.url = broker.url

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.broker.post(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.broker.get(path, **kwargs)

    def admin(self) -> dict[str, str]:
        return self.broker.admin_headers()

    def launch(self, scope: list[str] | None = None, **extra: Any) -> str:
        return self.broker.launch_token(scope or SCOPE, **extra)

    def register(
        self,
        scope: list[str] | None = None,
        *,
        dpop: bool = False,
        resource: str | None = None,
        launch: dict[str, Any] | None = None,
        expect: int = 200,
    ) -> Agent:
        """An agent registered over HTTP; ``dpop``: bound to a fresh DPoP key."""
        scope = scope or SCOPE
        launch_token = self.launch(scope, **(launch or {}))
        body, key = self.broker.register_body(launch_token, scope)
        if resource is not None:
            body["resource"] = resource
        headers: dict[str, str] = {}
        dpop_key = nacl.signing.SigningKey.generate() if dpop else None
        if dpop_key is not None:
            headers["DPoP"] = dpop_proof(dpop_key, htm="POST", htu=f"{self.url}/v1/register")
        answer = self.post("/v1/register", json=body, headers=headers)
        assert answer.status_code == expect, answer.text
        data = answer.json()
        return Agent(
            data.get("agent_id", ""),
            data.get("access_token", ""),
            key,
            dpop_key,
            data.get("token_type", ""),
        )

    def delegate(self, holder: Agent, to: Agent, scope: list[str] | None = None) -> str:
        answer = self.post(
            "/v1/delegate",
            json={"delegate_to": to.agent_id, "scope": scope or SCOPE[:1]},
            headers=holder.bearer(),
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def app_token(self, scopes: list[str] | None = None) -> str:
        app = self.broker.create_app(scopes or ["read:data:*", "write:data:*"])
        return self.broker.app_token(app)

    def operator_token(self, role: str) -> str:
        return self.broker.operator_token(role)

    def jwks(self) -> dict[str, Any]:
        answer = self.get("/.well-known/jwks.json")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def verify_keys(self) -> Callable[[str], nacl.signing.VerifyKey | None]:
        keys = {
            k["kid"]: nacl.signing.VerifyKey(b64url_decode(k["x"])) for k in self.jwks()["keys"]
        }
        return keys.get

    def resign(self, payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """``payload`` signed with the broker's own active key (only claim checks can
        refuse it): for tests of what a verifier must refuse of a well-signed token."""
        kid, private = self.broker.signing_key()
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        head = header or {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
        return compact(head, payload, nacl.signing.SigningKey(raw))

    def validate(self, token: str, **extra: Any) -> dict[str, Any]:
        answer = self.post("/v1/token/validate", json={"token": token, **extra})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def www_authenticate(response: httpx.Response) -> dict[str, dict[str, str]]:
    """The challenges of a ``WWW-Authenticate`` header, by scheme (RFC 9110 section 11.6.1),
    parsed the way a generic client would: ``scheme param="value", ...``."""
    value = response.headers.get("www-authenticate", "")
    challenges: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for item in _split_params(value):
        scheme, _, rest = item.strip().partition(" ")
        if "=" not in scheme:  # a new challenge: "<scheme> <first param>"
            current = challenges.setdefault(scheme, {})
            item = rest
        if current is None or not item.strip():
            continue
        name, _, quoted = item.strip().partition("=")
        current[name.strip()] = quoted.strip().strip('"')
    return challenges


def _split_params(value: str) -> list[str]:
    out, buf, quoted = [], "", False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            out.append(buf)
            buf = ""
        else:
            buf += char
    if buf:
        out.append(buf)
    return out
