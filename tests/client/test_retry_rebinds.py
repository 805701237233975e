"""A request the SDK tries again carries a fresh DPoP proof each time, in the async agent
as in the sync one: a proof is single use, and a retry that resent the first (after a
lost answer or a 503) would be refused as a replay by a broker that had seen it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tasklease.client import Agent, AsyncAgent

NONCE = "00" * 32
URL = "https://broker.example"
AGENT_ID = "spiffe://example.org/agent/o/t/1"
DELEGATE = "spiffe://example.org/agent/o/t/2"
SCOPE = ["read:x:*"]


class Broker:
    """Registers one DPoP-bound agent (an opaque token), and answers its first delegation
    request with a 503 asking for no wait, the next with the delegated token; keeps the
    DPoP proof of every delegation request."""

    def __init__(self) -> None:
        self.proofs: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: dict[str, Any]
        if request.url.path == "/v1/challenge":
            body = {"nonce": NONCE, "expires_in": 30}
        elif request.url.path == "/v1/register":
            body = {
                "agent_id": AGENT_ID, "access_token": "opaque-root", "expires_in": 300,
                "token_type": "DPoP",
            }  # fmt: skip
        else:
            assert request.url.path == "/v1/delegate"
            self.proofs.append(request.headers["dpop"])
            if len(self.proofs) == 1:
                problem = {"error_code": "service_unavailable", "detail": "busy", "status": 503}
                return httpx.Response(503, json=problem, headers={"Retry-After": "0"})
            body = {"access_token": "opaque-delegated", "expires_in": 60}
        return httpx.Response(200, json=body)


def test_a_retried_delegation_carries_a_fresh_proof() -> None:
    broker = Broker()
    agent = Agent.register(
        URL, "f" * 64, "o", "t", SCOPE, transport=httpx.MockTransport(broker), dpop=True
    )
    try:
        assert agent.delegate(DELEGATE, SCOPE).token == "opaque-delegated"
    finally:
        agent.close()
    first, second = broker.proofs
    assert first != second


def test_a_retried_async_delegation_carries_a_fresh_proof() -> None:
    broker = Broker()

    async def scenario() -> str:
        agent = await AsyncAgent.register(
            URL, "f" * 64, "o", "t", SCOPE, transport=httpx.MockTransport(broker), dpop=True
        )
        try:
            return (await agent.delegate(DELEGATE, SCOPE)).token
        finally:
            await agent.aclose()

    assert asyncio.run(scenario()) == "opaque-delegated"
    first, second = broker.proofs
    assert first != second
