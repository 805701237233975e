"""A credential that must not be sent is not sent: once released, at its renewal limit, or
past its ``exp`` while the broker is away, a renewal or a delegation raises before any
request leaves (clock injected, broker faked); a refusal of a renewal is raised, never
taken for an outage that would keep the old token in use."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tasklease.client import (
    Agent,
    AsyncAgent,
    CredentialExpired,
    RateLimited,
    RenewalCountExceeded,
    Unauthorized,
)
from tasklease.client._flows import Credential, Registration

NONCE = "00" * 32
URL = "https://broker.example"
AGENT_ID = "spiffe://example.org/agent/o/t/1"
ISSUED = 1_000.0
LIFETIME = 300
EXP = ISSUED + LIFETIME
SCOPE = ["read:x:*"]


class Clock:
    def __init__(self) -> None:
        self.t = ISSUED

    def now(self) -> float:
        return self.t


class Broker:
    """Registers one agent; answers renewals with ``renew``; counts the requests by path."""

    def __init__(self, renew: httpx.Response) -> None:
        self.renew = renew
        self.paths: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        body: dict[str, Any]
        if request.url.path == "/v1/challenge":
            body = {"nonce": NONCE, "expires_in": 30}
        elif request.url.path == "/v1/register":
            body = {"agent_id": AGENT_ID, "access_token": "a.b.c", "expires_in": LIFETIME}
        elif request.url.path == "/v1/token/release":
            return httpx.Response(204)
        else:
            assert request.url.path == "/v1/token/renew"
            return self.renew
        return httpx.Response(200, json=body)


def _agent(broker: Broker) -> tuple[Agent, Clock]:
    clock = Clock()
    agent = Agent.register(
        URL, "f" * 64, "o", "t", SCOPE, transport=httpx.MockTransport(broker), clock=clock,
        renew_margin=30,
    )  # fmt: skip
    return agent, clock


def _limit() -> httpx.Response:
    body = {"error_code": "renewal_count_exceeded", "detail": "no more", "status": 403}
    return httpx.Response(403, json=body)


def _rate_limited() -> httpx.Response:
    body = {"error_code": "rate_limited", "detail": "slow down", "status": 429}
    return httpx.Response(429, json=body, headers={"Retry-After": "60"})


def _revoked() -> httpx.Response:
    body = {"error": "invalid_token", "detail": "revoked", "status": 401}
    return httpx.Response(
        401, json=body, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def test_a_released_agent_does_not_send_its_token_to_renew() -> None:
    broker = Broker(httpx.Response(200, json={"access_token": "d.e.f", "expires_in": 300}))
    agent, _ = _agent(broker)
    try:
        agent.release()
        with pytest.raises(Unauthorized) as refused:
            agent.renew()
        assert refused.value.code == "released"
        assert broker.paths["/v1/token/renew"] == 0
    finally:
        agent.close()


def test_a_renewal_limit_is_not_asked_again() -> None:
    broker = Broker(_limit())
    agent, clock = _agent(broker)
    try:
        with pytest.raises(RenewalCountExceeded):
            agent.renew()
        clock.t = EXP - 1  # the token still lives, and is used, but never renewed again
        with pytest.raises(RenewalCountExceeded):
            agent.renew()
        agent.ensure_fresh()
        assert broker.paths["/v1/token/renew"] == 1
    finally:
        agent.close()


def test_a_token_dead_during_an_outage_is_not_sent_to_renew_before_the_next_attempt() -> None:
    broker = Broker(_rate_limited())  # the next attempt is due a minute later
    agent, clock = _agent(broker)
    try:
        clock.t = EXP - 1
        agent.ensure_fresh()  # the token lives on
        assert broker.paths["/v1/token/renew"] == 1
        clock.t = EXP
        with pytest.raises(CredentialExpired):
            agent.renew()
        assert broker.paths["/v1/token/renew"] == 1
    finally:
        agent.close()


@pytest.mark.parametrize("state", ["released", "limit", "expired"])
def test_a_credential_that_must_not_be_sent_delegates_nothing(state: str) -> None:
    clock = Clock()
    credential = Credential(
        URL, Registration(AGENT_ID, "a.b.c", LIFETIME), SCOPE, clock=clock, renew_margin=30
    )
    expected: type[Exception] = Unauthorized
    if state == "released":
        credential.released = True
    elif state == "limit":
        credential.limit = RenewalCountExceeded("no more", code="renewal_count_exceeded")
        clock.t = EXP
        expected = RenewalCountExceeded
    else:
        clock.t = EXP - 1
        credential.renewal_unreachable(RateLimited("slow down", retry_after=60))
        clock.t = EXP
        expected = CredentialExpired
    flow = credential.delegate_flow("spiffe://example.org/agent/o/t/2", SCOPE, None)
    with pytest.raises(expected):
        next(flow)  # raised before the first request is made


def test_a_refused_renewal_is_raised_not_ridden_out() -> None:
    # A revoked token: the broker refuses to renew it. That is no outage, and the agent
    # must not keep using the token until its exp as if the broker were away.
    broker = Broker(_revoked())
    agent, clock = _agent(broker)
    try:
        clock.t = EXP - 10
        with pytest.raises(Unauthorized):
            agent.ensure_fresh()
        assert agent.broker_unreachable_for is None
    finally:
        agent.close()


def test_a_refused_renewal_is_raised_not_ridden_out_async() -> None:
    broker = Broker(_revoked())
    clock = Clock()

    async def scenario() -> None:
        agent = await AsyncAgent.register(
            URL, "f" * 64, "o", "t", SCOPE, transport=httpx.MockTransport(broker),
            clock=clock, renew_margin=30,
        )  # fmt: skip
        try:
            clock.t = EXP - 10
            with pytest.raises(Unauthorized):
                await agent.ensure_fresh()
            assert agent.broker_unreachable_for is None
        finally:
            await agent.aclose()

    asyncio.run(scenario())
