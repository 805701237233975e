"""What the in-process console tests share: a broker on a memory store, the console
driven through httpx's ASGI transport, and its sign-in form."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.store import Store
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

__all__ = [
    "ADMIN_SECRET",
    "COOKIE",
    "CTX",
    "DENIAL",
    "ORIGIN",
    "form_csrf",
    "in_process_broker",
    "run",
    "sign_in",
]

ADMIN_SECRET = "console-tests-admin-secret-0123456789"
# httpx's ASGI transport connects from 127.0.0.1 (the console serves loopback over plain
# HTTP); with no public_url the broker's own origin is the address it serves on.
ORIGIN = "http://127.0.0.1:8080"
DENIAL = re.compile(r"den_[0-9a-f]{16}")
COOKIE = "tasklease_console"
CTX = RequestContext(request_id="req-1", remote="127.0.0.1")


def in_process_broker(store: Store | None = None, **config: Any) -> Broker:
    """A broker with the admin secret :data:`ADMIN_SECRET` (``config``: more settings)."""
    return Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET), **config),
        store if store is not None else MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.0),
        nonce_secret=b"n" * 32,
    )


def run(
    broker: Broker,
    go: Callable[[httpx.AsyncClient], Awaitable[Any]],
    client: tuple[str, int] = ("127.0.0.1", 40000),
) -> Any:
    """``go`` with a client of ``broker``'s app, connecting from ``client``."""

    async def main() -> Any:
        transport = httpx.ASGITransport(app=create_app(broker, background=False), client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await go(c)

    return asyncio.run(main())


def form_csrf(text: str) -> str:
    """The CSRF value of the form on the page ``text``."""
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None, text[:2000]
    return found.group(1)


async def sign_in(
    client: httpx.AsyncClient,
    operator: str = "",
    secret: str = ADMIN_SECRET,
    *,
    origin: str = ORIGIN,
) -> httpx.Response:
    """The sign-in form fetched and posted from a page at ``origin``: the answer."""
    form = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"csrf": form_csrf(form.text), "operator": operator, "secret": secret},
        headers={"origin": origin},
    )
