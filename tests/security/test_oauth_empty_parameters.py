# Would fail if: a form parameter sent without a value at the token endpoint (or at the
# revocation and introspection endpoints) were read as a value rather than as absent
# (RFC 6749 section 3.2), so that a standard client's empty `resource=`, `actor_token=`,
# `client_id=` beside a Basic header or `client_secret=` beside an assertion made the
# request fail; or an empty value made a parameter given twice acceptable.
"""RFC 6749 section 3.2: "Parameters sent without a value MUST be treated as if they were
omitted from the request." In process, over ASGI, on one broker for the module."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from security_support import START, b64url, forge, register

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

SECRET = "empty-parameters-admin-secret-0123456789"
PUBLIC = "https://broker.example"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
KEY = SigningKey.generate()


def _assertion(client_id: str) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": PUBLIC,
        "iat": int(START),
        "exp": int(START) + 60,
        "jti": secrets.token_hex(8),
    }
    return forge({"alg": "EdDSA", "typ": "JWT"}, claims, KEY)


def _answers() -> dict[str, httpx.Response]:
    broker = Broker(
        Config(admin_secret_hash=hash_secret(SECRET), public_url=(PUBLIC,), app_auth_burst=100),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )

    async def main() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(broker, background=False))
        got: dict[str, httpx.Response] = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            admin = (await c.post("/v1/admin/auth", json={"secret": SECRET})).json()
            app = (
                await c.post(
                    "/v1/admin/apps",
                    json={
                        "name": "empty-params",
                        "scopes": ["read:data:*"],
                        "public_key": b64url(bytes(KEY.verify_key)),
                    },
                    headers={"authorization": f"Bearer {admin['access_token']}"},
                )
            ).json()
            cid, secret = app["client_id"], app["client_secret"]
            basic = {
                "authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
            }
            cc: dict[str, Any] = {"grant_type": "client_credentials"}

            async def token(name: str, form: dict[str, str], **kw: Any) -> None:
                got[name] = await c.post("/v1/oauth/token", data=form, **kw)

            await token(
                "empty resource", {**cc, "client_id": cid, "client_secret": secret, "resource": ""}
            )
            await token(
                "basic, empty client_id and secret",
                {**cc, "client_id": "", "client_secret": ""},
                headers=basic,
            )
            await token(
                "assertion, empty secret",
                {
                    **cc,
                    "client_assertion_type": ASSERTION,
                    "client_assertion": _assertion(cid),
                    "client_secret": "",
                },
            )
            await token(
                "secret, empty assertion",
                {
                    **cc,
                    "client_id": cid,
                    "client_secret": secret,
                    "client_assertion_type": "",
                    "client_assertion": "",
                },
            )
            await token(
                "nothing but empty credentials", {**cc, "client_id": "", "client_secret": ""}
            )
            agent = register(broker, ("read:data:*",))
            ex = {
                "grant_type": EXCHANGE,
                "subject_token": agent.token,
                "subject_token_type": ACCESS,
            }
            await token(
                "exchange, empty actor and resource",
                {**ex, "actor_token": "", "actor_token_type": "", "resource": ""},
            )
            got["repeated, one empty"] = await c.post(
                "/v1/oauth/token",
                content=f"grant_type={EXCHANGE}&subject_token={agent.token}"
                f"&subject_token_type={ACCESS}&scope=&scope=read:data:1",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            got["introspect, empty audience"] = await c.post(
                "/v1/introspect",
                data={"token": agent.token, "audience": ""},
                headers={"authorization": f"Bearer {admin['access_token']}"},
            )
        return got

    return asyncio.run(main())


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, httpx.Response]]:
    yield _answers()


@pytest.mark.parametrize(
    "name",
    [
        "empty resource",
        "basic, empty client_id and secret",
        "assertion, empty secret",
        "secret, empty assertion",
        "exchange, empty actor and resource",
    ],
)
def test_a_parameter_without_a_value_is_as_if_omitted(
    answers: dict[str, httpx.Response], name: str
) -> None:
    answer = answers[name]
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_token"]


def test_empty_credentials_alone_are_no_credentials(answers: dict[str, httpx.Response]) -> None:
    answer = answers["nothing but empty credentials"]
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
    assert answer.json()["denial_id"].startswith("den_")


def test_a_parameter_given_twice_is_refused_even_once_empty(
    answers: dict[str, httpx.Response],
) -> None:
    answer = answers["repeated, one empty"]
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_introspection_reads_an_empty_audience_as_none(
    answers: dict[str, httpx.Response],
) -> None:
    answer = answers["introspect, empty audience"]
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is True
