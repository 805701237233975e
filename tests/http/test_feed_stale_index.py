"""A revocation stream ends once its process can no longer confirm that its revocation
state is current (decision 21's ``revocation_staleness_bound``).

A replica whose store watch goes quiet (its LISTEN connection lost and not coming back,
its refreshes failing) stops hearing the revocations other replicas commit: its own
checks fail closed once the bound passes. Its streams must not go on beating: a
keepalive tells a verifier the feed is current, so a verifier following that replica
would accept every token revoked elsewhere for as long as its reader's token lived
(30 minutes for an app's). Ended, the stream's reader reconnects, is refused 503 while
the replica is stale, and fails closed past its own staleness bound.
"""

from __future__ import annotations

import asyncio
from typing import Any

from argon2 import PasswordHasher

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.http.app import create_app
from tasklease.storage import open_store

ADMIN_SECRET = "s" * 40
# The admin secret's hash at the cheapest cost argon2 allows (checked with the cost it
# names): the test signs in once, and the broker's own cost would be most of its time.
ADMIN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(ADMIN_SECRET)


def _stream(app: Any, token: str, on_sync: Any) -> tuple[int, list[bytes], bool]:
    """Open ``GET /v1/revocations/stream`` in process; call ``on_sync`` once its backlog
    is out. Returns the status, the body chunks, and whether the server ended it (a
    keepalive makes the reader hang up instead)."""
    messages: list[dict[str, Any]] = []

    async def run() -> None:
        hang_up = asyncio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await hang_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)
            body = message.get("body", b"")
            if b"event: sync" in body:
                on_sync()
            if b": keepalive" in body:
                hang_up.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/revocations/stream",
            "raw_path": b"/v1/revocations/stream",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"broker"), (b"authorization", f"Bearer {token}".encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
        }
        await asyncio.wait_for(app(scope, receive, send), timeout=10)

    asyncio.run(run())
    [start] = [m for m in messages if m["type"] == "http.response.start"]
    bodies = [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]
    ended = any(m["type"] == "http.response.body" and not m.get("more_body") for m in messages)
    return start["status"], bodies, ended


def test_a_stream_ends_when_the_revocation_index_is_no_longer_confirmed_current() -> None:
    config = Config(admin_secret_hash=ADMIN_HASH, revocation_staleness_bound=5.0)
    broker = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"n" * 32)
    now = [1000.0]
    broker._monotonic = lambda: now[0]
    # As a store watch leaves it: confirmed current for the bound after its last check-in.
    broker._current_until = now[0] + config.revocation_staleness_bound
    app = create_app(broker, background=False)
    try:
        token = broker.admin_auth(ADMIN_SECRET, RequestContext()).token

        def watch_goes_quiet() -> None:
            now[0] += 60  # no check-in since: other replicas' revocations go unheard

        status, bodies, ended = _stream(app, token, watch_goes_quiet)
        assert status == 200
        assert any(b"event: sync" in body for body in bodies)
        # Would fail if: the stream went on beating while this process could not confirm
        # its revocation state, keeping its verifiers "current" on stale state.
        assert not any(b": keepalive" in body for body in bodies), bodies
        assert ended, "the stream was not ended by the server"
    finally:
        broker.audit.close()
        broker.store.close()
