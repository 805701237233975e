# Would fail if: clients the broker refused together with one Retry-After (a 503's
# default 1 s, one rate limit's whole seconds) all came back at one instant, a thundering
# herd against the broker that has just said it is overloaded; or if the spread waited
# less than the broker asked, or past the policy's max_wait or a token's exp.
"""Retries that honour ``Retry-After`` are spread: each client waits at least what the
broker asked, and up to half as long again at random (never past ``max_wait``, nor, for
a renewal kept in reserve, past the token's ``exp``), so that an orchestrator's hundreds
of agents refused in one burst return spread out, not together."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import tasklease.client._async as async_module
from tasklease.client import AsyncAgent, RateLimited, Retry, Unavailable

URL = "https://broker.example"
NONCE = "00" * 32
AGENTS = 200


def _refused(request: httpx.Request, seconds: str = "1") -> httpx.Response:
    body = {"error_code": "service_unavailable", "detail": "try later", "status": 503}
    return httpx.Response(503, json=body, headers={"Retry-After": seconds})


def test_a_retry_after_is_waited_and_spread_over_half_of_it_again() -> None:
    refused = _refused(httpx.Request("POST", URL))
    waits = [Retry().wait(1, refused) for _ in range(AGENTS)]
    assert all(w is not None and 1.0 <= w <= 1.5 for w in waits), waits
    spread = [w for w in waits if w is not None]
    assert max(spread) - min(spread) > 0.25, spread


def test_the_spread_never_goes_past_max_wait() -> None:
    policy = Retry(max_wait=10.0)
    refused = _refused(httpx.Request("POST", URL), "8")
    waits = [policy.wait(1, refused) for _ in range(AGENTS)]
    assert all(w is not None and 8.0 <= w <= 10.0 for w in waits), waits
    at_limit = _refused(httpx.Request("POST", URL), "10")
    assert {policy.wait(1, at_limit) for _ in range(20)} == {10.0}
    assert policy.wait(1, _refused(httpx.Request("POST", URL), "0")) == 0.0


def test_a_burst_of_agents_refused_together_comes_back_spread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many agents registering at once, every request answered 503 with the broker's
    default ``Retry-After: 1``: their first retries are spread over [1, 1.5] s."""
    slept: list[float] = []

    class _Recorded:
        """The SDK's view of ``asyncio``, its sleeps recorded and not slept (this
        process's other event loops, a broker's in a thread, keep the real one)."""

        def __getattr__(self, name: str) -> object:
            return getattr(asyncio, name)

        @staticmethod
        async def sleep(delay: float) -> None:
            slept.append(delay)
            await asyncio.sleep(0)

    monkeypatch.setattr(async_module, "asyncio", _Recorded())

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        return _refused(request)

    async def burst() -> list[BaseException | AsyncAgent]:
        transport = httpx.MockTransport(answer)
        return await asyncio.gather(
            *(
                AsyncAgent.register(URL, "f" * 64, "o", f"t{i}", ["read:x:*"], transport=transport)
                for i in range(AGENTS)
            ),
            return_exceptions=True,
        )

    outcomes = asyncio.run(burst())
    assert all(isinstance(o, Unavailable) for o in outcomes), outcomes[:3]
    assert len(slept) == AGENTS * Retry().attempts
    assert all(1.0 <= s <= 1.5 for s in slept), sorted(slept)[:3]
    assert len(set(slept)) > AGENTS, "retries come back together"


class _Clock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def test_a_renewal_told_to_wait_is_spread_but_not_past_exp() -> None:
    from tasklease.client._flows import Credential, Registration

    tried_at = []
    for _ in range(50):
        clock = _Clock(1_000.0)
        credential = Credential(
            URL,
            Registration("spiffe://t/agent/o/t/i", "token", 300),
            ["read:x:*"],
            clock=clock,
            renew_margin=30,
        )
        clock.t = 1_000.0 + 271  # due: 29 s to live
        credential.renewal_unreachable(RateLimited("slow down", status=429, retry_after=20))
        start = clock.t
        while not credential.renewal_due():
            clock.t += 0.05
        tried_at.append(clock.t - start)
    assert all(19.99 <= t <= 29.06 for t in tried_at), sorted(tried_at)[:3]
    assert max(tried_at) - min(tried_at) > 2.0, tried_at
