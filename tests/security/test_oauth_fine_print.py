# Would fail if: a client assertion (private_key_jwt) whose aud is the token endpoint's
# URL signed in by default (draft-ietf-oauth-rfc7523bis: the issuer is the one audience;
# a token endpoint URL is what a malicious authorization server's metadata can name), or
# the operator's opt-in stopped taking it; a `resource` or `audience` given twice were
# answered invalid_request rather than RFC 8707's invalid_target at either grant type; or
# the metadata's client authentication methods (token, introspection, revocation
# endpoints) named a method the endpoint refuses, or left out one it takes.
"""OAuth fine print against a real broker in process, over ASGI, one per configuration."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from security_support import CTX, START, b64url, dpop_proof, forge, register

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

SECRET = "oauth-fine-print-admin-secret-0123456789"
PUBLIC = "https://broker.example"
ENDPOINT = f"{PUBLIC}/v1/oauth/token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
FORM = {"content-type": "application/x-www-form-urlencoded"}
KEY = SigningKey.generate()


def _assertion(client_id: str, aud: Any) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": int(START),
        "exp": int(START) + 60,
        "jti": secrets.token_hex(8),
    }
    return forge({"alg": "EdDSA", "typ": "JWT"}, claims, KEY)


def _hs256(client_id: str, secret: str) -> str:
    """A ``client_secret_jwt`` assertion: HMAC-SHA256 under the client secret."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": PUBLIC,
        "exp": int(START) + 60,
        "jti": secrets.token_hex(8),
    }
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def _broker(**config: Any) -> Broker:
    return Broker(
        Config(
            admin_secret_hash=hash_secret(SECRET),
            public_url=(PUBLIC,),
            app_auth_burst=100,
            **config,
        ),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )


def _answers(**config: Any) -> dict[str, Any]:
    """Every request of the module against one broker made with ``config``."""
    broker = _broker(**config)

    async def main() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(broker, background=False))
        got: dict[str, Any] = {}
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as c:
            admin = (await c.post("/v1/admin/auth", json={"secret": SECRET})).json()
            bearer = {"authorization": f"Bearer {admin['access_token']}"}
            app = (
                await c.post(
                    "/v1/admin/apps",
                    json={
                        "name": "fine-print",
                        "scopes": ["read:data:*"],
                        "public_key": b64url(bytes(KEY.verify_key)),
                    },
                    headers=bearer,
                )
            ).json()
            cid, secret = app["client_id"], app["client_secret"]
            basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
            cc = {"grant_type": "client_credentials"}

            async def token(form: dict[str, str], **kw: Any) -> httpx.Response:
                return await c.post("/v1/oauth/token", data=form, **kw)

            def signed(aud: Any) -> dict[str, str]:
                return {
                    **cc,
                    "client_assertion_type": ASSERTION,
                    "client_assertion": _assertion(cid, aud),
                }

            # Client assertions by audience.
            got["aud issuer"] = await token(signed(PUBLIC))
            got["aud [issuer]"] = await token(signed([PUBLIC]))
            got["aud token endpoint"] = await token(signed(ENDPOINT))
            got["aud both"] = await token(signed([PUBLIC, ENDPOINT]))
            got["aud elsewhere"] = await token(signed("https://other.example/token"))

            # Several targets at once, at both grant types.
            agent = register(broker, ("read:data:*",))
            exchange = (
                f"grant_type={EXCHANGE}&subject_token={agent.token}&subject_token_type={ACCESS}"
            )
            credentials = f"grant_type=client_credentials&client_id={cid}&client_secret={secret}"
            for grant, body in (("cc", credentials), ("exchange", exchange)):
                for name in ("resource", "audience"):
                    got[f"{grant} {name} twice"] = await c.post(
                        "/v1/oauth/token",
                        content=f"{body}&{name}={PUBLIC}&{name}=https://two.example",
                        headers=FORM,
                    )
            got["scope twice"] = await c.post(
                "/v1/oauth/token", content=f"{credentials}&scope=a&scope=b", headers=FORM
            )

            # Each client authentication method, at each endpoint.
            got["metadata"] = (await c.get("/.well-known/oauth-authorization-server")).json()
            app_token = (await token({**cc, "client_id": cid, "client_secret": secret})).json()
            dpop_key = SigningKey.generate()
            proof = dpop_proof(dpop_key, htu=ENDPOINT)
            bound_app = (
                await token(
                    {**cc, "client_id": cid, "client_secret": secret}, headers={"DPoP": proof}
                )
            ).json()
            assert bound_app["token_type"] == "DPoP", bound_app
            at = f"{PUBLIC}/v1/register"
            ctx = dataclasses.replace(CTX, dpop=dpop_proof(dpop_key, htu=at), method="POST", url=at)
            bound_agent = register(broker, ("read:data:*",), ctx=ctx)
            methods: dict[str, dict[str, httpx.Response]] = {}
            methods["token"] = {
                "client_secret_basic": await token(cc, headers={"authorization": f"Basic {basic}"}),
                "client_secret_post": await token(
                    {**cc, "client_id": cid, "client_secret": secret}
                ),
                "private_key_jwt": await token(signed(PUBLIC)),
                "none": await token(
                    {
                        "grant_type": EXCHANGE,
                        "subject_token": agent.token,
                        "subject_token_type": ACCESS,
                    }
                ),
                # Not listed, so refused: a shared-secret assertion, and no credentials.
                "client_secret_jwt": await token(
                    {
                        **cc,
                        "client_assertion_type": ASSERTION,
                        "client_assertion": _hs256(cid, secret),
                    }
                ),
                "": await token({**cc, "client_id": cid}),
            }
            for path, holder, bound in (
                ("/v1/introspect", app_token["access_token"], bound_app["access_token"]),
                ("/v1/token/revoke", agent.token, bound_agent.token),
            ):
                url = f"{PUBLIC}{path}"
                tried: dict[str, httpx.Response] = {}
                # Each with a token of its own to act on (revocation spends it).
                tried["client_secret_basic"] = await c.post(
                    path,
                    data={"token": register(broker, ("read:data:*",)).token},
                    headers={"authorization": f"Basic {basic}"},
                )
                tried["client_secret_post"] = await c.post(
                    path,
                    data={
                        "token": register(broker, ("read:data:*",)).token,
                        "client_id": cid,
                        "client_secret": secret,
                    },
                )
                # Introspection of any token; revocation of the holder's own (RFC 7009).
                subject = holder if path == "/v1/token/revoke" else agent.token
                tried["Bearer"] = await c.post(
                    path,
                    data={"token": subject},
                    headers={"authorization": f"Bearer {holder}"},
                )
                tried["DPoP"] = await c.post(
                    path,
                    data={"token": bound},
                    headers={
                        "authorization": f"DPoP {bound}",
                        "DPoP": dpop_proof(dpop_key, htu=url, token=bound),
                    },
                )
                methods[path] = tried
            got["methods"] = methods
        return got

    return asyncio.run(main())


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, Any]]:
    yield _answers()


@pytest.fixture(scope="module")
def endpoint_aud_answers() -> Iterator[dict[str, Any]]:
    yield _answers(client_assertion_token_endpoint_aud=True)


def _refused(answer: httpx.Response, status: int, error: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error, answer.text


def test_a_client_assertion_is_for_the_issuer_only(answers: dict[str, Any]) -> None:
    assert answers["aud issuer"].status_code == 200, answers["aud issuer"].text
    assert answers["aud [issuer]"].status_code == 200, answers["aud [issuer]"].text
    for name in ("aud token endpoint", "aud both", "aud elsewhere"):
        _refused(answers[name], 401, "invalid_client")
        assert answers[name].json()["denial_id"].startswith("den_")


def test_the_token_endpoint_audience_is_an_operators_opt_in(
    endpoint_aud_answers: dict[str, Any],
) -> None:
    for name in ("aud issuer", "aud [issuer]", "aud token endpoint"):
        assert endpoint_aud_answers[name].status_code == 200, (
            name,
            endpoint_aud_answers[name].text,
        )
    for name in ("aud both", "aud elsewhere"):
        _refused(endpoint_aud_answers[name], 401, "invalid_client")


@pytest.mark.parametrize("grant", ["cc", "exchange"])
@pytest.mark.parametrize("name", ["resource", "audience"])
def test_several_targets_are_invalid_target(answers: dict[str, Any], grant: str, name: str) -> None:
    _refused(answers[f"{grant} {name} twice"], 400, "invalid_target")


def test_another_parameter_given_twice_stays_invalid_request(answers: dict[str, Any]) -> None:
    _refused(answers["scope twice"], 400, "invalid_request")


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("token", "token_endpoint_auth_methods_supported"),
        ("/v1/introspect", "introspection_endpoint_auth_methods_supported"),
        ("/v1/token/revoke", "revocation_endpoint_auth_methods_supported"),
    ],
)
def test_the_metadata_lists_exactly_the_methods_each_endpoint_takes(
    answers: dict[str, Any], endpoint: str, field: str
) -> None:
    tried: dict[str, httpx.Response] = answers["methods"][endpoint]
    taken = sorted(m for m, answer in tried.items() if answer.status_code == 200)
    refused = {m: a for m, a in tried.items() if a.status_code != 200}
    assert sorted(answers["metadata"][field]) == taken, {m: a.text for m, a in tried.items()}
    for answer in refused.values():  # refused as a client that did not authenticate
        assert answer.status_code in (400, 401), answer.text


@pytest.mark.parametrize(
    ("named", "signs"),
    [
        ("https://honest.example", False),  # another server's issuer: signed for nobody
        ("https://app-facing.example/", True),
        ("tasklease", True),  # a broker without public_url: no URL to compare
    ],
)
def test_the_sdk_signs_for_the_issuer_of_the_broker_it_was_given(named: str, signs: bool) -> None:
    """The SDK's assertions name the issuer its broker's metadata gives, only if that is
    the URL the SDK was given (RFC 8414 section 3.3): a server naming another issuer could
    otherwise have the app sign an assertion for that one."""
    from tasklease.client import AppClient, TaskleaseError
    from tasklease.client._retry import Retry

    sent: list[dict[str, Any]] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"issuer": named})
        form = dict(p.split("=", 1) for p in request.content.decode().split("&"))
        payload = form["client_assertion"].split(".")[1]
        sent.append(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
        return httpx.Response(
            200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 300}
        )

    client = AppClient(
        "https://app-facing.example",
        "cid",
        private_key=SigningKey.generate(),
        transport=httpx.MockTransport(server),
        retry=Retry(attempts=0),
    )
    with client:
        if not signs:
            with pytest.raises(TaskleaseError, match="names the issuer"):
                client.app_token()
            assert sent == []
            return
        assert client.app_token() == "t"
    assert [c["aud"] for c in sent] == [named]
