# Would fail if: a token exchange whose DPoP-bound subject token came with a proof lacking
# the broker's nonce (dpop_nonce = "required") were answered invalid_request without a
# DPoP-Nonce header, leaving a client nothing to retry with (RFC 9449 section 8), or a
# refused proof there were not invalid_dpop_proof (RFC 9449 section 5); or either refusal
# lost its denial_id.
"""RFC 9449 at the token endpoint's token exchange: the errors the DPoP proof of the
subject token gets. In process, over ASGI, on one broker for the module."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Iterator

import httpx
import pytest
from nacl.signing import SigningKey
from security_support import START, b64url, forge, launch

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

PUBLIC = "https://broker.example"
TOKEN_URL = f"{PUBLIC}/v1/oauth/token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
KEY = SigningKey.generate()


def _proof(htu: str, *, nonce: str | None = None, token: str | None = None) -> str:
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(KEY.verify_key))},
    }
    claims: dict[str, object] = {
        "jti": secrets.token_hex(8),
        "htm": "POST",
        "htu": htu,
        "iat": int(START),
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if token is not None:
        claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    return forge(header, claims, KEY)


def _answers() -> dict[str, httpx.Response]:
    broker = Broker(
        Config(
            admin_secret_hash=hash_secret("x" * 40), public_url=(PUBLIC,), dpop_nonce="required"
        ),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )

    async def main() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(broker, background=False))
        got: dict[str, httpx.Response] = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            agent_key = SigningKey.generate()
            challenge = (await c.get("/v1/challenge")).json()["nonce"]

            def b64(raw: bytes) -> str:
                return base64.b64encode(raw).decode()

            body = {
                "launch_token": launch(broker),
                "nonce": challenge,
                "public_key": b64(bytes(agent_key.verify_key)),
                "signature": b64(agent_key.sign(bytes.fromhex(challenge)).signature),
                "orch_id": "orch-x",
                "task_id": "task-x",
                "requested_scope": ["read:data:*"],
            }
            asked = await c.post(
                "/v1/register", json=body, headers={"DPoP": _proof(f"{PUBLIC}/v1/register")}
            )
            nonce = asked.headers["dpop-nonce"]
            registered = await c.post(
                "/v1/register",
                json=body,
                headers={"DPoP": _proof(f"{PUBLIC}/v1/register", nonce=nonce)},
            )
            token = registered.json()["access_token"]
            form = {"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ACCESS}
            got["no nonce"] = await c.post(
                "/v1/oauth/token", data=form, headers={"DPoP": _proof(TOKEN_URL, token=token)}
            )
            fresh = got["no nonce"].headers.get("dpop-nonce", nonce)
            got["retried"] = await c.post(
                "/v1/oauth/token",
                data=form,
                headers={"DPoP": _proof(TOKEN_URL, nonce=fresh, token=token)},
            )
            got["proof for elsewhere"] = await c.post(
                "/v1/oauth/token",
                data=form,
                headers={"DPoP": _proof(f"{PUBLIC}/v1/other", nonce=fresh, token=token)},
            )
        return got

    return asyncio.run(main())


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, httpx.Response]]:
    yield _answers()


def test_a_proof_without_the_nonce_is_asked_for_it(answers: dict[str, httpx.Response]) -> None:
    answer = answers["no nonce"]
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "use_dpop_nonce", answer.text
    assert answer.headers.get("dpop-nonce")
    assert answer.json()["denial_id"].startswith("den_")
    retried = answers["retried"]
    assert retried.status_code == 200, retried.text
    assert retried.json()["token_type"] == "DPoP"


def test_a_refused_proof_is_invalid_dpop_proof(answers: dict[str, httpx.Response]) -> None:
    answer = answers["proof for elsewhere"]
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_dpop_proof", answer.text
    assert answer.json()["denial_id"].startswith("den_")
