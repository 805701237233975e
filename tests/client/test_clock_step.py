"""The agent's host clock steps while it holds a token: renewal is timed by the time
elapsed since the token was received, so a step back does not let the token die before it
is renewed, and a step ahead renews once, early, instead of declaring a live token dead
(clock injected, broker faked)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tasklease.client import Agent, CredentialExpired

NONCE = "00" * 32
URL = "https://broker.example"
AGENT_ID = "spiffe://example.org/agent/o/t/1"
ISSUED = 1_800_000_000.0
LIFETIME = 300
MARGIN = 30
HOUR = 3600.0


class SteppedClock:
    """A wall clock that can be stepped, and an elapsed clock that steps do not move."""

    def __init__(self) -> None:
        self.wall = ISSUED
        self.elapsed = 50.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.elapsed

    def run(self, seconds: float) -> None:
        self.wall += seconds
        self.elapsed += seconds


def _agent(renewals: list[float], *, reachable: bool = True) -> tuple[Agent, SteppedClock]:
    clock = SteppedClock()

    def answer(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any]
        if request.url.path == "/v1/challenge":
            body = {"nonce": NONCE, "expires_in": 30}
        elif request.url.path == "/v1/register":
            body = {"agent_id": AGENT_ID, "access_token": "a.b.c", "expires_in": LIFETIME}
        else:
            assert request.url.path == "/v1/token/renew"
            if not reachable:
                raise httpx.ConnectError("refused", request=request)
            renewals.append(clock.elapsed)
            body = {"access_token": f"a.b.{len(renewals)}", "expires_in": LIFETIME}
        return httpx.Response(200, json=body)

    agent = Agent.register(
        URL,
        "f" * 64,
        "o",
        "t",
        ["read:x:*"],
        transport=httpx.MockTransport(answer),
        clock=clock,
        renew_margin=MARGIN,
    )
    return agent, clock


def test_a_clock_stepped_back_does_not_keep_the_token_past_its_renewal() -> None:
    renewals: list[float] = []
    agent, clock = _agent(renewals)
    try:
        clock.run(100)
        clock.wall -= HOUR  # NTP steps the host clock back an hour
        clock.run(LIFETIME - MARGIN - 100)  # inside the margin by elapsed time
        agent.ensure_fresh()
        assert renewals == [50.0 + LIFETIME - MARGIN]
        assert agent.token == "a.b.1"
    finally:
        agent.close()


def test_a_clock_stepped_ahead_renews_a_live_token_once_instead_of_calling_it_dead() -> None:
    renewals: list[float] = []
    agent, clock = _agent(renewals)
    try:
        clock.run(10)
        clock.wall += HOUR  # past the token's exp by the wall clock, not in truth
        agent.ensure_fresh()  # was: CredentialExpired for a token the broker renews
        assert agent.token == "a.b.1"
        for _ in range(5):  # no burst: the successor is not due again
            clock.run(20)
            agent.ensure_fresh()
        assert len(renewals) == 1
    finally:
        agent.close()


def test_a_token_is_dead_by_elapsed_time_whatever_the_wall_clock_says() -> None:
    agent, clock = _agent([], reachable=False)
    try:
        clock.run(LIFETIME - MARGIN)
        clock.wall -= HOUR
        agent.ensure_fresh()  # the broker is away: kept while it lives
        clock.run(MARGIN)  # its exp by elapsed time; an hour before it by the wall
        with pytest.raises(CredentialExpired):
            agent.ensure_fresh()
        assert agent.broker_unreachable_for == pytest.approx(MARGIN)
    finally:
        agent.close()


def test_the_system_clock_measures_elapsed_time_apart_from_the_wall() -> None:
    from tasklease.client._flows import SystemClock, elapsed_clock

    clock = SystemClock()
    assert elapsed_clock(clock) == clock.monotonic
    assert abs(clock.monotonic() - clock.now()) > HOUR  # not the wall clock
