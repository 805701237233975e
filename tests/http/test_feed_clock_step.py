"""A revocation stream ends with its reader's token by elapsed time as well as by the
clock: the broker's clock stepped back does not keep a stream open past the life its
reader's token had left when it opened (clocks injected, the stream called in process)."""

from __future__ import annotations

import asyncio
from typing import Any

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.http.feed import RevocationHub, _EventStream
from tasklease.storage import open_store

CTX = RequestContext(request_id="req-test", remote="127.0.0.1", path="/v1/revocations/stream")
LIFE = 120
HOUR = 3600.0


def test_a_stream_ends_when_its_readers_token_does_though_the_clock_stepped_back() -> None:
    wall, elapsed = ManualClock(), ManualClock(1000.0)
    broker = Broker(
        Config(admin_secret_hash=hash_secret("s" * 40)),
        open_store("memory://"),
        KeyRing.generate(),
        clock=wall,
        nonce_secret=b"n" * 32,
        monotonic=elapsed.now,
    )
    cfg = broker.config
    _, reader = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub="admin",
        aud=cfg.audience,
        iat=int(wall.now()),
        ttl=LIFE,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        hub = RevocationHub(broker)
        slot = await broker.open_feed_stream(reader, CTX)
        stream = _EventStream(
            broker,
            hub,
            cursor=None,
            anchor=None,
            reader=reader,
            slot=slot,
            heartbeat=0.01,
            write_timeout=1,
        )
        hung_up = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        running = asyncio.create_task(stream({"type": "http"}, receive, send))
        try:
            while not any(m.get("body", b"").startswith(b"retry:") for m in sent):
                await asyncio.sleep(0.01)
            wall.advance(30)
            elapsed.advance(30)
            wall.advance(-HOUR)  # the broker's clock is stepped back an hour
            elapsed.advance(LIFE - 30)  # the reader's token has ended by now
            wall.advance(LIFE - 30)
            await asyncio.wait_for(asyncio.shield(running), 2)
        finally:
            hung_up.set()
            await running
            await hub.close()

    try:
        asyncio.run(scenario())
    finally:
        broker.audit.close()
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert broker.stream_slots.total == 0
