"""A revocation stream that stops talking is not live: the verifier drops it after
``feed_liveness`` seconds and dials again, so a half-open connection never passes for a
current feed (critical tokens are refused meanwhile). Against a real HTTP server on
loopback that sends the stream's backlog and ``sync``, then nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from verify_support import serve_app

from tasklease.verify import Verifier

pytestmark = pytest.mark.slow


def silent_broker(opened: list[float]) -> Starlette:
    async def jwks(request: Request) -> Response:
        return JSONResponse({"keys": []})

    async def stream(request: Request) -> Response:
        opened.append(time.monotonic())

        async def events() -> AsyncIterator[bytes]:
            yield b'id: 0\nevent: sync\ndata: {"cursor": 0, "server_time": 0}\n\n'
            await asyncio.sleep(3600)  # then silence: no keepalive, no close

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/.well-known/jwks.json", jwks),
            Route("/v1/revocations/stream", stream),
        ]
    )


def test_a_silent_stream_is_not_live_and_is_dialled_again() -> None:
    opened: list[float] = []
    served = serve_app(silent_broker(opened))
    verifier = Verifier(
        served.url,
        audience="svc-a",
        credentials=lambda: "a-token",
        feed_liveness=1.0,
        max_feed_staleness=30,
    )
    try:
        verifier.start(wait=5)
        assert verifier.feed_live()
        deadline = time.monotonic() + 10
        while verifier.feed_live():
            assert time.monotonic() < deadline, "a silent stream stayed live"
            time.sleep(0.02)
        went_silent = verifier.feed_staleness()
        assert 1.0 <= went_silent < 3.0
        while len(opened) < 2:  # the stream is dialled again, and synced again
            assert time.monotonic() < deadline, "the silent stream was never dialled again"
            time.sleep(0.02)
        assert 0.9 <= opened[1] - opened[0] < 3.0
        # The server sees the request before the verifier has read the answer's headers,
        # which is when it counts the connection.
        while verifier.stats()["feed_connections"] < 2:
            assert time.monotonic() < deadline, "the second connection was never counted"
            time.sleep(0.02)
        assert verifier.feed_staleness() < 30  # ordinary tokens: within their bound all along
    finally:
        verifier.close()
        served.stop()


def test_a_known_key_never_waits_for_a_refresh_that_hangs() -> None:
    """While a refresh of the broker's keys hangs (an unreachable broker costs the whole
    timeout), tokens whose key is known are verified from the cache without waiting."""
    import threading

    import httpx
    import nacl.signing

    from tasklease.rules import jws
    from tasklease.verify._jwks import KeySet

    key = nacl.signing.SigningKey.generate()
    public = bytes(key.verify_key)
    kid = jws.jwk_thumbprint(public)
    document = {
        "keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": jws.b64url_encode(public)}]
    }
    served_once = threading.Event()
    released = threading.Event()  # the test has seen what it checks while the fetch hangs

    async def jwks(request: Request) -> Response:
        if served_once.is_set():
            quiet_until = time.monotonic() + 3  # the broker has gone quiet
            while not released.is_set() and time.monotonic() < quiet_until:
                await asyncio.sleep(0.01)
        served_once.set()
        return JSONResponse(document)

    served = serve_app(Starlette(routes=[Route("/.well-known/jwks.json", jwks)]))
    client = httpx.Client(base_url=served.url, timeout=5)
    try:
        keys = KeySet(client, ttl=0.1, min_interval=0.0)
        assert keys.refresh() and keys.get(kid) is not None
        time.sleep(0.2)  # stale now
        hanging = threading.Thread(target=keys.resolve, args=(kid,))
        hanging.start()
        time.sleep(0.3)  # the other caller is inside the fetch
        started = time.monotonic()
        assert keys.resolve(kid) is not None
        assert time.monotonic() - started < 0.5
        assert hanging.is_alive()  # the refresh was still hanging meanwhile
        released.set()
        hanging.join(10)
        assert keys.fetches == 2  # the hanging one, not one more
    finally:
        released.set()
        client.close()
        served.stop()
