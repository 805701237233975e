"""Background heartbeats of agents started together drift apart: each wait is drawn
between 80 % and 100 % of the interval, never longer (broker faked, sleeps recorded)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tasklease.client import AsyncAgent

NONCE = "00" * 32
URL = "https://broker.example"
INTERVAL = 30.0


def _answer(request: httpx.Request) -> httpx.Response:
    body: dict[str, Any]
    if request.url.path == "/v1/challenge":
        body = {"nonce": NONCE, "expires_in": 30}
    elif request.url.path == "/v1/register":
        body = {"agent_id": "spiffe://example.org/agent/o/t/1", "access_token": "a.b.c"}
        body["expires_in"] = 300
    elif request.url.path == "/v1/token/release":
        return httpx.Response(204)
    else:
        assert request.url.path == "/v1/heartbeat"
        body = {"status": "ok", "interval": INTERVAL, "deadline": 90}
    return httpx.Response(200, json=body)


def test_background_heartbeats_wait_a_spread_of_their_interval_never_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sleep = asyncio.sleep
    waits: list[float] = []
    enough = asyncio.Event()

    async def sleep(delay: float, result: Any = None) -> Any:
        if delay >= 1:  # a heartbeat's wait: recorded, not slept
            waits.append(delay)
            if len(waits) >= 40:
                enough.set()
        return await real_sleep(0, result)

    async def scenario() -> None:
        agent = await AsyncAgent.register(
            URL, "f" * 64, "o", "t", ["read:x:*"], transport=httpx.MockTransport(_answer)
        )
        monkeypatch.setattr(asyncio, "sleep", sleep)
        try:
            await agent.start_heartbeats(INTERVAL)
            await asyncio.wait_for(enough.wait(), 10)
        finally:
            monkeypatch.setattr(asyncio, "sleep", real_sleep)
            await agent.release()
            await agent.aclose()

    asyncio.run(scenario())
    assert all(0.8 * INTERVAL <= wait <= INTERVAL for wait in waits)
    assert len(set(waits)) > len(waits) // 2  # spread, not one value
    assert min(waits) < 0.9 * INTERVAL < max(waits)


def test_a_heartbeat_wait_is_within_its_interval() -> None:
    from tasklease.client._trust import heartbeat_wait

    waits = [heartbeat_wait(INTERVAL) for _ in range(1000)]
    assert all(0.8 * INTERVAL <= wait <= INTERVAL for wait in waits)
    assert min(waits) < 0.82 * INTERVAL and max(waits) > 0.98 * INTERVAL
    assert heartbeat_wait(0) == 0
