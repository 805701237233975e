# Would fail if: an agent's delegation sent with its token while the agent's own renewal
# (from another task of the same agent) replaced that token were answered 401 to the
# caller: the renewal revoked the token the request carried, so an orchestrator fanning
# out delegations across its renewal saw spurious refusals.
"""A delegation in flight when the agent's own renewal ends the token it carries (the
broker refused it and changed nothing) is sent once more, with the successor."""

from __future__ import annotations

import asyncio
import time

import httpx

from tasklease.client import AsyncAgent
from tasklease.client.testing import BrokerForTests

SCOPE = ["read:data:*"]


class _Clock:
    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> float:
        return time.time() + self.ahead


class _HeldDelegations(httpx.AsyncHTTPTransport):
    """Holds the first delegation request until ``go`` is set: a request on the wire
    while another task of the agent renews."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.held = asyncio.Event()
        self.delegations: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/delegate":
            self.delegations.append(request.headers["authorization"])
            if len(self.delegations) == 1:
                self.held.set()
                await self.go.wait()
        return await super().handle_async_request(request)


def test_a_delegation_crossing_the_agents_own_renewal_is_sent_again(
    broker: BrokerForTests,
) -> None:
    launch, other = broker.launch_token(SCOPE), broker.launch_token(SCOPE)

    async def run() -> None:
        clock = _Clock()
        transport = _HeldDelegations()
        async with (
            await AsyncAgent.register(
                broker.url, launch, "orch", "fan-out", SCOPE, clock=clock, transport=transport
            ) as parent,
            await AsyncAgent.register(broker.url, other, "orch", "child", SCOPE) as child,
        ):
            before = parent.token
            sent = asyncio.create_task(parent.delegate(child.agent_id, ["read:data:1"], ttl=60))
            await transport.held.wait()
            clock.ahead = parent.expires_at - time.time() - 5  # due: 5 s to live
            await parent.ensure_fresh()  # another task's renewal: the predecessor revoked
            assert parent.token != before
            transport.go.set()
            delegated = await sent
            assert broker.admin().validate_token(delegated.token)["valid"] is True
            assert transport.delegations == [f"Bearer {before}", f"Bearer {parent.token}"]

    asyncio.run(run())
