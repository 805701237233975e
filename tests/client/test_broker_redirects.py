"""The SDK's requests to the broker are not sent on to wherever a redirect points, also
through a client of the caller's own that follows redirects (``client=``,
``follow_redirects=True``): a ``307`` keeps the method and the body, and httpx drops
only the ``Authorization`` header on the way to another origin. The launch token and the
key's signature (registration), the agent's token (an exchange's ``subject_token``) and
a DPoP proof went to the host the ``Location`` named, and its answer was taken for the
broker's. The SDK's own clients never followed; now no client does, for the broker's
requests: a redirect is an answer (an error), not a place to go."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tasklease.client import Agent, AsyncAgent, TaskleaseError

NONCE = "00" * 32
URL = "https://broker.example"
ELSEWHERE = "https://elsewhere.example"


def _handler(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host != "broker.example":
            seen.append(request)
            return httpx.Response(
                200, json={"agent_id": "spiffe://x/a", "access_token": "a.b.c", "expires_in": 60}
            )
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        return httpx.Response(307, headers={"Location": f"{ELSEWHERE}{request.url.path}"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("dpop", [False, True])
def test_a_registration_is_not_sent_where_a_redirect_points(dpop: bool) -> None:
    seen: list[httpx.Request] = []
    with (
        httpx.Client(transport=_handler(seen), follow_redirects=True) as own,
        pytest.raises(TaskleaseError),
    ):
        Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], client=own, dpop=dpop)
    assert seen == []


def test_an_async_registration_is_not_sent_where_a_redirect_points() -> None:
    seen: list[httpx.Request] = []
    sync = _handler(seen)

    async def handle(request: httpx.Request) -> httpx.Response:
        return sync.handle_request(request)

    async def register() -> None:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handle), follow_redirects=True
        ) as own:
            await AsyncAgent.register(URL, "f" * 64, "o", "t", ["read:x:*"], client=own)

    with pytest.raises(TaskleaseError):
        asyncio.run(register())
    assert seen == []


def test_a_redirect_is_an_error_naming_its_status() -> None:
    seen: list[httpx.Request] = []
    with (
        httpx.Client(transport=_handler(seen), follow_redirects=True) as own,
        pytest.raises(TaskleaseError) as refused,
    ):
        Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], client=own)
    assert refused.value.status == 307 and refused.value.code == "http_307"


def test_a_release_answered_with_a_redirect_is_not_taken_for_done() -> None:
    # Whatever stands at the broker's URL answers the release with a redirect: the token
    # was not released, and the agent must not believe it was.
    sent: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.url.host}{request.url.path}")
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        if request.url.path == "/v1/register":
            body = {"agent_id": "spiffe://x/a", "access_token": "a.b.c", "expires_in": 60}
            return httpx.Response(200, json=body)
        return httpx.Response(302, headers={"Location": f"{ELSEWHERE}/done"})

    agent = Agent.register(
        URL, "f" * 64, "o", "t", ["read:x:*"], transport=httpx.MockTransport(handle)
    )
    try:
        with pytest.raises(TaskleaseError):
            agent.release()
        assert agent._credential.released is False
    finally:
        agent.close()
    assert sent[-1] == "broker.example/v1/token/release"
