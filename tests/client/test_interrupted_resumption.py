"""A resumption that recovers a lost renewal answer, itself interrupted (the broker out
of reach for its challenge, the caller's task cancelled while it waits): the agent's token
is still the revoked predecessor, so the next renewal must resume again, not raise the
refusal for good. Against a real broker over loopback HTTP, sync and async."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tasklease.client import Agent, AsyncAgent, TransportError
from tasklease.client.testing import BrokerForTests

SCOPE = ["read:data:*"]


class LosesARenewalThenAChallenge(httpx.BaseTransport):
    """The first renewal's answer is lost (after the broker renewed), then the broker is
    out of reach for the next challenge (the resumption's first step)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.renewals_lost = 0
        self.challenges_failed = 0
        self.armed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge" and self.armed and not self.challenges_failed:
            self.challenges_failed += 1
            raise httpx.ReadError("the connection dropped", request=request)
        response = self.inner.handle_request(request)
        if request.url.path == "/v1/token/renew" and not self.renewals_lost:
            response.read()
            response.close()
            self.renewals_lost += 1
            self.armed = True
            raise httpx.ReadError("the connection dropped before the answer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_resumption_that_could_not_reach_the_broker_is_tried_again(
    broker: BrokerForTests,
) -> None:
    lossy = LosesARenewalThenAChallenge()
    admin = broker.admin()
    agent = Agent.register(
        broker.url, broker.launch_token(SCOPE), "orch-1", "task-resume-x", SCOPE, transport=lossy
    )
    with agent:
        first = agent.token
        with pytest.raises(TransportError):
            agent.renew()  # renewed at the broker, answer lost
        with pytest.raises(TransportError):
            agent.renew()  # refused, resumes: the challenge cannot reach the broker
        assert lossy.challenges_failed == 1
        agent.renew()  # the broker is back: resumes
        assert agent.token != first
        assert admin.validate_token(agent.token)["valid"]


class StallsTheResumption(httpx.AsyncBaseTransport):
    """The first renewal's answer is lost; the next challenge waits until cancelled."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = False
        self.stalled = False
        self.reached = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge" and self.lost and not self.stalled:
            self.stalled = True
            self.reached.set()
            await asyncio.Event().wait()  # until the caller's task is cancelled
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v1/token/renew" and not self.lost:
            await response.aread()
            await response.aclose()
            self.lost = True
            raise httpx.ReadError("the connection dropped before the answer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_resumption_cancelled_by_its_caller_is_tried_again(broker: BrokerForTests) -> None:
    stalls = StallsTheResumption()
    admin = broker.admin()
    launch_token = broker.launch_token(SCOPE)

    async def main() -> None:
        agent = await AsyncAgent.register(
            broker.url, launch_token, "orch-1", "task-resume-c", SCOPE, transport=stalls
        )
        async with agent:
            first = agent.token
            with pytest.raises(TransportError):
                await agent.renew()
            task = asyncio.create_task(agent.renew())
            await stalls.reached.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await agent.renew()  # resumes now
            assert agent.token != first
            assert admin.validate_token(agent.token)["valid"]

    asyncio.run(main())


def test_heartbeats_started_twice_at_once_stop_with_the_agent(broker: BrokerForTests) -> None:
    """Two coroutines starting heartbeats together start one task: release stops it,
    none is left heartbeating a released agent."""
    launch_token = broker.launch_token(SCOPE)

    async def main() -> None:
        agent = await AsyncAgent.register(broker.url, launch_token, "orch-1", "task-hb2", SCOPE)
        async with agent:
            await asyncio.gather(agent.start_heartbeats(3600), agent.start_heartbeats(3600))
        await asyncio.sleep(0)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others

    asyncio.run(main())


def test_threads_starting_heartbeats_together_start_one(broker: BrokerForTests) -> None:
    import threading

    agent = Agent.register(broker.url, broker.launch_token(SCOPE), "orch-1", "task-hb3", SCOPE)
    before = set(threading.enumerate())
    barrier = threading.Barrier(2)

    def start() -> None:
        barrier.wait()
        agent.start_heartbeats(3600)

    starters = [threading.Thread(target=start) for _ in range(2)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    agent.release()
    agent.close()
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("heartbeat")]
    for t in left:
        t.join(timeout=1)
    assert not [t for t in left if t.is_alive()]
