# Would fail if: the console's own router (its Mount) redirected a path with a trailing
# slash to the one without, naming the host the request's Host header chose: a 307 that
# sends a sign-in form (and its secret) on to that host, or a poisoned answer where a
# proxy in front routes or caches without keying on Host.
"""A console path with a trailing slash is not redirected to a host the request's
``Host`` header chose, at the root or under a tenant (docs/decisions.md, "no redirect
from a trailing slash"). In process, over the app's ASGI interface."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

ADMIN_SECRET = "console-slashes-admin-secret-0123456789"
FORGED = {"host": "evil.example"}
PATHS = (
    ("GET", "/console/login/"),
    ("POST", "/console/login/"),
    ("GET", "/console/audit/"),
    ("GET", "/console/revoke/"),
    ("POST", "/console/revoke/"),
    ("GET", "/console/static/console.js/"),
    ("GET", "/t/acme/console/login/"),
    ("POST", "/t/acme/console/login/"),
)


def _broker() -> Broker:
    return Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.0),
        nonce_secret=b"n" * 32,
    )


def _answers() -> dict[tuple[str, str], httpx.Response]:
    async def main() -> dict[tuple[str, str], httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(_broker(), background=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            signed = await c.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
            bearer = {"authorization": f"Bearer {signed.json()['access_token']}"}
            made = await c.post(
                "/v1/admin/tenants",
                json={"name": "acme", "trust_domain": "acme.example"},
                headers=bearer,
            )
            assert made.status_code == 201, made.text
            return {
                (method, path): await c.request(
                    method, path, headers=FORGED, data={"secret": "s" * 20}
                )
                for method, path in PATHS
            }

    return asyncio.run(main())


@pytest.fixture(scope="module")
def answers() -> dict[tuple[str, str], httpx.Response]:
    return _answers()


@pytest.mark.parametrize(("method", "path"), PATHS)
def test_a_trailing_slash_names_no_host(
    answers: dict[tuple[str, str], httpx.Response], method: str, path: str
) -> None:
    answer = answers[(method, path)]
    assert answer.status_code == 404, (method, path, answer.status_code)
    assert "location" not in answer.headers
    assert "evil.example" not in answer.text
