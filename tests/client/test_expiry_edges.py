"""A token is dead at its ``exp``: at that very second the agent refuses to use it, whether
the broker is away or has refused to renew it any more (clock injected, broker faked)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tasklease.client import Agent, CredentialExpired, RenewalCountExceeded

NONCE = "00" * 32
URL = "https://broker.example"
AGENT_ID = "spiffe://example.org/agent/o/t/1"
ISSUED = 1_000.0
LIFETIME = 300
EXP = ISSUED + LIFETIME


class Clock:
    def __init__(self) -> None:
        self.t = ISSUED

    def now(self) -> float:
        return self.t


def _agent(renew: Callable[[httpx.Request], httpx.Response]) -> tuple[Agent, Clock]:
    def answer(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any]
        if request.url.path == "/v1/challenge":
            body = {"nonce": NONCE, "expires_in": 30}
        elif request.url.path == "/v1/register":
            body = {"agent_id": AGENT_ID, "access_token": "a.b.c", "expires_in": LIFETIME}
        else:
            assert request.url.path == "/v1/token/renew"
            return renew(request)
        return httpx.Response(200, json=body)

    clock = Clock()
    agent = Agent.register(
        URL,
        "f" * 64,
        "o",
        "t",
        ["read:x:*"],
        transport=httpx.MockTransport(answer),
        clock=clock,
        renew_margin=30,
    )
    return agent, clock


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def _rate_limited(request: httpx.Request) -> httpx.Response:
    body = {"error_code": "rate_limited", "detail": "slow down", "status": 429}
    return httpx.Response(429, json=body, headers={"Retry-After": "60"})


def _limit(request: httpx.Request) -> httpx.Response:
    body = {"error_code": "renewal_count_exceeded", "detail": "no more", "status": 403}
    return httpx.Response(403, json=body)


def test_a_first_failed_renewal_at_exp_is_expired() -> None:
    agent, clock = _agent(_unreachable)
    try:
        clock.t = EXP
        with pytest.raises(CredentialExpired):
            agent.ensure_fresh()
    finally:
        agent.close()


def test_a_token_kept_through_an_outage_is_refused_at_exp() -> None:
    # The broker asked for a minute (429, Retry-After): no attempt is due before
    # EXP + 50, yet at EXP the token is refused.
    agent, clock = _agent(_rate_limited)
    try:
        clock.t = EXP - 10
        agent.ensure_fresh()  # within the margin: renewal fails, the token lives on
        assert agent.broker_unreachable_for == 0
        with pytest.raises(CredentialExpired):
            clock.t = EXP
            agent.ensure_fresh()
    finally:
        agent.close()


def test_a_token_the_broker_will_not_renew_is_refused_at_exp() -> None:
    agent, clock = _agent(_limit)
    try:
        clock.t = EXP - 10
        with pytest.raises(RenewalCountExceeded):
            agent.ensure_fresh()
        clock.t = EXP - 1
        agent.ensure_fresh()  # used until it expires
        clock.t = EXP
        with pytest.raises(RenewalCountExceeded):
            agent.ensure_fresh()
    finally:
        agent.close()
