"""``X-Forwarded-For`` / ``X-Forwarded-Proto`` are honoured only from ``trusted_proxies``.

Before, any loopback peer could send ``X-Forwarded-For``: the server took it as the client
address, so each new value got a fresh admin-auth bucket and became the audited source.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, launch_broker, stop_broker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasklease.core.config import Config
from tasklease.http.middleware import TrustedProxyMiddleware
from tasklease.settings import ConfigError, load_config

pytestmark = pytest.mark.slow

STRICT_LIMIT = {
    "TASKLEASE_ADMIN_AUTH_BURST": "3",
    "TASKLEASE_ADMIN_AUTH_RATE": "0.001",
}


def _start(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> RunningBroker:
    return launch_broker(tmp_path_factory.mktemp("edge-proxy"), env)


@pytest.fixture
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = _start(tmp_path_factory, STRICT_LIMIT)
    yield running
    stop_broker(running)


@pytest.fixture
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = _start(
        tmp_path_factory, {**STRICT_LIMIT, "TASKLEASE_TRUSTED_PROXIES": "127.0.0.1, 10.9.0.0/16"}
    )
    yield running
    stop_broker(running)


def _failed_auth(broker: RunningBroker, forwarded: str | None) -> tuple[int, str]:
    request_id = "edge-" + secrets.token_hex(6)
    headers = {"X-Request-ID": request_id}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
        headers["X-Forwarded-Proto"] = "https"
    resp = broker.post("/v1/admin/auth", json={"secret": "wrong-" + "x" * 20}, headers=headers)
    return resp.status_code, request_id


def _events(broker: RunningBroker, request_id: str) -> list[dict[str, Any]]:
    resp = broker.get(
        "/v1/audit/events",
        params={"event_type": "admin_auth_failed", "limit": 1000},
        headers=broker.admin_headers(),
    )
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["events"] if e["request_id"] == request_id]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(direct: RunningBroker) -> None:
    direct.admin_token()  # one of the three allowed attempts (kept for reading the audit)
    answers = [_failed_auth(direct, f"203.0.113.{i}") for i in range(1, 7)]
    statuses = [status for status, _ in answers]
    # Two attempts left in the bucket of 127.0.0.1, whatever the header claims.
    assert statuses == [401, 401, 429, 429, 429, 429], statuses
    for _, request_id in answers[:2]:
        [event] = _events(direct, request_id)
        assert "from 127.0.0.1" in event["detail"], event
        assert "203.0.113." not in str(event), event


def test_forwarded_for_from_a_trusted_proxy_names_the_client(proxied: RunningBroker) -> None:
    proxied.admin_token()  # spends one attempt of 127.0.0.1's own bucket
    # Each client behind the proxy has its own bucket...
    first = [_failed_auth(proxied, "203.0.113.5")[0] for _ in range(4)]
    assert first == [401, 401, 401, 429], first
    status, request_id = _failed_auth(proxied, "203.0.113.6")
    assert status == 401
    [event] = _events(proxied, request_id)
    assert "from 203.0.113.6" in event["detail"], event
    # ...and a client cannot pick its address by prepending to the header: the right-most
    # address not of a trusted proxy is the one our proxy saw.
    status, request_id = _failed_auth(proxied, "198.51.100.77, 203.0.113.7, 10.9.1.2")
    assert status == 401
    [event] = _events(proxied, request_id)
    assert "from 203.0.113.7" in event["detail"], event
    assert "198.51.100.77" not in event["detail"]
    status, _ = _failed_auth(proxied, "198.51.100.78, 203.0.113.5")
    assert status == 429  # 203.0.113.5's bucket, whatever it prepends


def test_without_the_header_the_peer_is_the_client(proxied: RunningBroker) -> None:
    status, request_id = _failed_auth(proxied, None)
    assert status == 401
    [event] = _events(proxied, request_id)
    assert "from 127.0.0.1" in event["detail"], event


# --- the middleware in process ------------------------------------------------------------


def _echo_app(trusted: tuple[str, ...]) -> httpx.AsyncClient:
    async def echo(request: Request) -> JSONResponse:
        client = request.client
        return JSONResponse(
            {"client": client.host if client else None, "scheme": request.url.scheme}
        )

    app = TrustedProxyMiddleware(Starlette(routes=[Route("/", echo)]), trusted=trusted)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.9.0.1", 4000)),
        base_url="http://testserver",
    )


@pytest.mark.parametrize(
    ("trusted", "headers", "client", "scheme"),
    [
        # The peer is not trusted: both headers are ignored.
        ((), {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https"}, "10.9.0.1", "http"),
        (("10.8.0.0/16",), {"x-forwarded-for": "1.2.3.4"}, "10.9.0.1", "http"),
        # Trusted: the right-most address that is not a trusted proxy.
        (("10.9.0.0/16",), {"x-forwarded-for": "1.2.3.4"}, "1.2.3.4", "http"),
        (("10.9.0.1",), {"x-forwarded-for": "6.6.6.6, 1.2.3.4"}, "1.2.3.4", "http"),
        (("10.9.0.0/16",), {"x-forwarded-for": "6.6.6.6, 1.2.3.4, 10.9.3.3"}, "1.2.3.4", "http"),
        (("10.9.0.0/16",), {"x-forwarded-for": "2001:db8::1"}, "2001:db8::1", "http"),
        (("10.9.0.0/16",), {"x-forwarded-for": "[2001:db8::2]:443"}, "2001:db8::2", "http"),
        (("10.9.0.0/16",), {"x-forwarded-for": "192.0.2.1:5555"}, "192.0.2.1", "http"),
        # Every hop trusted: the farthest one.
        (("10.0.0.0/8",), {"x-forwarded-for": "10.1.1.1, 10.2.2.2"}, "10.1.1.1", "http"),
        # Garbage stops the walk at the last trusted hop.
        (("10.0.0.0/8",), {"x-forwarded-for": "1.2.3.4, junk, 10.2.2.2"}, "10.2.2.2", "http"),
        (("10.9.0.0/16",), {"x-forwarded-for": "not-an-ip"}, "10.9.0.1", "http"),
        (("10.9.0.0/16",), {"x-forwarded-for": ""}, "10.9.0.1", "http"),
        # X-Forwarded-Proto: the value our proxy appended, http or https only.
        (("10.9.0.0/16",), {"x-forwarded-proto": "https"}, "10.9.0.1", "https"),
        (("10.9.0.0/16",), {"x-forwarded-proto": "http, https"}, "10.9.0.1", "https"),
        (("10.9.0.0/16",), {"x-forwarded-proto": "gopher"}, "10.9.0.1", "http"),
    ],
)
def test_client_address_resolution(
    trusted: tuple[str, ...], headers: dict[str, str], client: str, scheme: str
) -> None:
    import asyncio

    async def run() -> dict[str, Any]:
        async with _echo_app(trusted) as http:
            resp = await http.get("/", headers=headers)
            assert resp.status_code == 200
            data: dict[str, Any] = resp.json()
            return data

    assert asyncio.run(run()) == {"client": client, "scheme": scheme}


def test_trusted_proxies_setting(tmp_path: Path) -> None:
    env = {"TASKLEASE_DATA_DIR": str(tmp_path), "TASKLEASE_TRUSTED_PROXIES": "10.0.0.1, ::1"}
    assert load_config(env=env).trusted_proxies == ("10.0.0.1", "::1")
    assert Config().trusted_proxies == ()
    assert Config(trusted_proxies=("192.168.0.0/16", "fd00::/8")).trusted_proxies
    for bad in ("10.0.0.1/33", "proxy.example", "", "10.0.0.0/8/1"):
        with pytest.raises(ValueError, match="trusted_proxies"):
            Config(trusted_proxies=(bad,))
    config = tmp_path / "c.toml"
    config.write_text('trusted_proxies = ["not an address"]\n')
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(str(config), env={"TASKLEASE_DATA_DIR": str(tmp_path)})
