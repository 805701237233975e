"""An answer whose JSON nests deeper than the decoder's recursion limit (a thousand ``[``:
a kilobyte, far below the SDK's answer cap) made ``json`` raise ``RecursionError``, which
the SDK let out of every call instead of a ``TaskleaseError``: a broker's answer, an
error's problem body, a resource server's DPoP-nonce refusal, a GitHub Actions runner's
answer, the broker's answer to offline reports. The SDK reads JSON as the verifier does
(``bounds.json_document``): too deep is not JSON."""

from __future__ import annotations

import asyncio

import httpx
import nacl.signing
import pytest

from tasklease.client import (
    AdminClient,
    Agent,
    AppClient,
    AsyncAgent,
    OfflineReporter,
    TaskleaseError,
)
from tasklease.client._attest import github_actions_token_flow
from tasklease.client._holder import DPoPKey
from tasklease.client._sync import run_flow
from tasklease.client.testing import BrokerForTests

NONCE = "00" * 32
URL = "https://broker.example"
DEEP = b"[" * 5000
JSON = {"content-type": "application/json"}


def _broker(status: int) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        return httpx.Response(status, content=DEEP, headers=JSON)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [200, 400, 401, 500])
def test_a_registration_answered_too_deep_is_a_tasklease_error(status: int) -> None:
    with pytest.raises(TaskleaseError):
        Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=_broker(status))


@pytest.mark.parametrize("status", [200, 403])
def test_an_async_registration_answered_too_deep_is_a_tasklease_error(status: int) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        return httpx.Response(status, content=DEEP, headers=JSON)

    async def register() -> None:
        await AsyncAgent.register(
            URL, "f" * 64, "o", "t", ["read:x:*"], transport=httpx.MockTransport(handler)
        )

    with pytest.raises(TaskleaseError):
        asyncio.run(register())


@pytest.mark.parametrize("status", [200, 401])
def test_an_app_sign_in_answered_too_deep_is_a_tasklease_error(status: int) -> None:
    with (
        AppClient(URL, "app", "secret", transport=_broker(status)) as app,
        pytest.raises(TaskleaseError),
    ):
        app.app_token()


def test_an_admin_answer_too_deep_is_a_tasklease_error() -> None:
    with (
        AdminClient(URL, None, transport=_broker(200)) as admin,
        pytest.raises(TaskleaseError),
    ):
        admin.jwks()


def test_a_resource_servers_nonce_refusal_too_deep_is_an_answer() -> None:
    # A resource server that hands out DPoP nonces answers 401 with a body that nests
    # too deep: the agent's auth gets the answer, not a RecursionError.
    key = DPoPKey()

    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, content=DEEP, headers={**JSON, "DPoP-Nonce": "n1"})

    with httpx.Client(transport=httpx.MockTransport(server)) as http:
        request = key.bind(http.build_request("GET", "https://rs.example/data"))
        response = http.send(request)
        response.read()
        assert key.observe(response) is False
        assert key.nonce_for("https://rs.example/") == "n1"


def test_a_runner_answer_too_deep_is_a_tasklease_error() -> None:
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://runner.example/t",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "r",
    }
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=DEEP, headers=JSON))
    with httpx.Client(transport=transport) as http, pytest.raises(TaskleaseError):
        run_flow(http, github_actions_token_flow("aud", env))


def test_offline_reports_answered_too_deep_are_settled(broker: BrokerForTests) -> None:
    key = nacl.signing.SigningKey.generate()
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, content=DEEP, headers=JSON)

    def auth(request: httpx.Request) -> httpx.Request:
        return request

    with (
        broker.agent(["read:data:*"], key=key, dpop=True) as agent,
        httpx.Client(transport=httpx.MockTransport(answer)) as http,
    ):
        reporter = OfflineReporter(http, URL, auth)
        delegate = nacl.signing.SigningKey.generate()
        reporter.attenuate(agent, "helper", bytes(delegate.verify_key), ttl=60)
        assert reporter.flush() == 1
        assert len(sent) == 1 and reporter.pending == 0
