"""A renewal whose answer is lost (the broker renewed, the connection dropped before the
agent read the successor) against a real broker over loopback HTTP: the agent's next
renewal is refused, since its token was revoked with the renewal, and the SDK resumes
with the agent's registered key instead (and its DPoP key when bound), sync and async.
An agent the broker will not resume gets the refusal."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from tasklease.client import Agent, AsyncAgent, TransportError, Unauthorized
from tasklease.client.testing import BrokerForTests

SCOPE = ["read:data:*"]


def _claims(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


class LosesARenewalAnswer(httpx.BaseTransport):
    """Sends every request; the answer to the first renewal is read and then lost."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lost: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v1/token/renew" and not self.lost:
            response.read()
            self.lost.append(json.loads(response.content)["access_token"])
            response.close()
            raise httpx.ReadError("the connection dropped before the answer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class LosesARenewalAnswerAsync(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v1/token/renew" and not self.lost:
            await response.aread()
            self.lost.append(json.loads(response.content)["access_token"])
            await response.aclose()
            raise httpx.ReadError("the connection dropped before the answer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("dpop", [False, True], ids=["bearer", "dpop"])
def test_an_agent_resumes_when_a_renewal_answer_was_lost(
    broker: BrokerForTests, dpop: bool
) -> None:
    lossy = LosesARenewalAnswer()
    admin = broker.admin()
    agent = Agent.register(
        broker.url,
        broker.launch_token(SCOPE),
        "orch-1",
        "task-lost",
        SCOPE,
        dpop=dpop,
        transport=lossy,
    )
    with agent:
        first = agent.token
        with pytest.raises(TransportError):
            agent.renew()  # the broker renewed: the predecessor is revoked
        agent.renew()  # refused for the revoked token: resumes instead
        assert agent.token not in (first, lossy.lost[0])
        assert _claims(agent.token)["sub"] == agent.agent_id
        if dpop:  # still bound to the same DPoP key (validation would need a proof)
            assert _claims(agent.token)["cnf"] == _claims(first)["cnf"]
        else:
            assert not admin.validate_token(first)["valid"]
            assert admin.validate_token(agent.token)["valid"]
        agent.renew()  # and renews as before: the broker accepts the resumed token


def test_an_async_agent_resumes_when_a_renewal_answer_was_lost(broker: BrokerForTests) -> None:
    lossy = LosesARenewalAnswerAsync()
    admin = broker.admin()
    launch_token = broker.launch_token(SCOPE)

    async def main() -> None:
        agent = await AsyncAgent.register(
            broker.url, launch_token, "orch-1", "task-lost-async", SCOPE, transport=lossy
        )
        async with agent:
            first = agent.token
            with pytest.raises(TransportError):
                await agent.renew()
            await agent.renew()
            assert agent.token not in (first, lossy.lost[0])
            assert admin.validate_token(agent.token)["valid"]

    asyncio.run(main())


def test_without_a_lost_answer_a_refused_renewal_is_raised(broker: BrokerForTests) -> None:
    """Only a renewal after one that went unanswered resumes: a token revoked otherwise
    is refused as before."""
    admin = broker.admin()
    with Agent.register(broker.url, broker.launch_token(SCOPE), "orch-1", "task-r", SCOPE) as agent:
        admin.revoke("token", _claims(agent.token)["jti"])  # type: ignore[arg-type]
        with pytest.raises(Unauthorized):
            agent.renew()
