# Would fail if: an answer carrying a token or a secret (a sign-in, a tenant's first
# operator secret, an app's client secret, a launch token), or the refusal of one, left
# out RFC 6749 section 5.1's ``Pragma: no-cache`` beside ``Cache-Control: no-store``, at
# the root or under /t/<name>; or a cacheable answer (the JWKS) got a contradictory one.
"""Answers are ``Cache-Control: no-store`` and ``Pragma: no-cache`` unless their handler
chose a cache policy of its own (RFC 6749 section 5.1: both, on any answer holding
tokens, credentials or other sensitive information). In process, over ASGI."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

ADMIN_SECRET = "no-store-pragma-admin-secret-0123456789"
WRONG = {"secret": "wrong-" + "x" * 30}


def _broker() -> Broker:
    return Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.0),
        nonce_secret=b"n" * 32,
    )


def _answers() -> dict[str, httpx.Response]:
    async def main() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(_broker(), background=False))
        got: dict[str, httpx.Response] = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            got["admin sign-in"] = await c.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
            got["admin sign-in refused"] = await c.post("/v1/admin/auth", json=WRONG)
            bearer = {"authorization": f"Bearer {got['admin sign-in'].json()['access_token']}"}
            got["tenant created"] = await c.post(
                "/v1/admin/tenants",
                json={"name": "acme", "trust_domain": "acme.example"},
                headers=bearer,
            )
            got["app created"] = await c.post(
                "/v1/admin/apps",
                json={"name": "pragma-app", "scopes": ["read:data:*"]},
                headers=bearer,
            )
            got["launch token created"] = await c.post(
                "/v1/admin/launch-tokens",
                json={"agent_name": "pragma-agent", "allowed_scope": ["read:data:*"]},
                headers=bearer,
            )
            got["oauth token refused"] = await c.post(
                "/v1/oauth/token",
                data={"grant_type": "client_credentials", "client_id": "nobody"},
            )
            got["tenant sign-in refused"] = await c.post("/t/acme/v1/admin/auth", json=WRONG)
            got["jwks"] = await c.get("/.well-known/jwks.json")
        return got

    return asyncio.run(main())


@pytest.fixture(scope="module")
def answers() -> dict[str, httpx.Response]:
    return _answers()


SENSITIVE = (
    ("admin sign-in", 200),
    ("admin sign-in refused", 401),
    ("tenant created", 201),
    ("app created", 201),
    ("launch token created", 201),
    ("oauth token refused", 401),
    ("tenant sign-in refused", 401),
)


@pytest.mark.parametrize(("name", "status"), SENSITIVE, ids=[name for name, _ in SENSITIVE])
def test_sensitive_answers_are_neither_stored_nor_cached(
    answers: dict[str, httpx.Response], name: str, status: int
) -> None:
    answer = answers[name]
    assert answer.status_code == status, (name, answer.text)
    assert answer.headers.get_list("cache-control") == ["no-store"], name
    assert answer.headers.get_list("pragma") == ["no-cache"], name


def test_a_handlers_own_cache_policy_gets_no_pragma(answers: dict[str, httpx.Response]) -> None:
    jwks = answers["jwks"]
    assert jwks.headers.get_list("cache-control") == ["public, max-age=60"]
    assert "pragma" not in jwks.headers
