# Would fail if: with dpop_nonce = "required" a DPoP-bound agent that restarted could not
# resume: its resumption's proof carries no nonce (a new process has none), the refusal
# is the one generic 401 every failed resumption gets (spending the challenge, telling no
# one how an agent is bound) and so carries no DPoP-Nonce, and no other answer gave one.
"""A DPoP-bound agent resumes under ``dpop_nonce = "required"``: the challenge it asks for
first comes with a current DPoP nonce (RFC 9449 section 8.2), which the SDK puts in the
resumption's proof. In process, over ASGI, with the async SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from nacl.signing import SigningKey
from security_support import START, launch

from tasklease.client import AsyncAgent
from tasklease.client._holder import DPoPKey
from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

PUBLIC = "http://127.0.0.1"
SCOPE = ["read:data:*"]


def _broker(**config: Any) -> Broker:
    return Broker(
        Config(admin_secret_hash=hash_secret("x" * 40), public_url=(PUBLIC,), **config),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )


def test_a_dpop_bound_agent_resumes_when_nonces_are_required() -> None:
    broker = _broker(dpop_nonce="required")
    transport = httpx.ASGITransport(app=create_app(broker, background=False))
    key, dpop = SigningKey.generate(), SigningKey.generate()

    def proofs() -> DPoPKey:  # a process's key object: the nonces it has seen are its own
        return DPoPKey(dpop, clock=broker.clock.now)

    async def main() -> None:
        first = await AsyncAgent.register(
            PUBLIC,
            launch(broker),
            "orch-1",
            "task-1",
            SCOPE,
            key=key,
            dpop=proofs(),
            transport=transport,
            clock=broker.clock,
        )
        agent_id = first.agent_id
        # The process ends without releasing; a new one (no nonce known) resumes.
        await first.aclose()
        resumed = await AsyncAgent.resume(
            PUBLIC, agent_id, key, SCOPE, dpop=proofs(), transport=transport, clock=broker.clock
        )
        try:
            assert resumed.agent_id == agent_id
        finally:
            await resumed.aclose()

    asyncio.run(main())


def test_the_challenge_carries_no_dpop_nonce_when_none_is_required() -> None:
    broker = _broker()
    transport = httpx.ASGITransport(app=create_app(broker, background=False))

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            return await client.get("/v1/challenge")

    answer = asyncio.run(main())
    assert answer.status_code == 200 and "dpop-nonce" not in answer.headers
