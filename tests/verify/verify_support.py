"""Helpers for the verifier suite (imported by its conftest and test modules)."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

_HTTP_TESTS = str(Path(__file__).resolve().parents[1] / "http")
if _HTTP_TESTS not in sys.path:
    sys.path.insert(0, _HTTP_TESTS)

from e2e_support import RunningBroker, free_port  # noqa: E402

from tasklease.verify import AppCredentials  # noqa: E402

MCP_PORT = free_port()
MCP_RESOURCE = f"http://127.0.0.1:{MCP_PORT}/mcp"
AUDIENCES = f"svc-a,svc-b,{MCP_RESOURCE}"


def app_credentials(broker: RunningBroker) -> AppCredentials:
    app = broker.create_app(["read:data:*"], name=f"rs-{secrets.token_hex(4)}")
    return AppCredentials(app["client_id"], app["client_secret"])


class Served:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve_app(app: Any, port: int | None = None, **options: Any) -> Served:
    """Run an ASGI app under uvicorn in a thread; return once it answers.

    ``options`` go to ``uvicorn.Config`` (TLS files, an ``http`` protocol class); with
    ``ssl_certfile`` the URL is ``https``.
    """
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    scheme = "https" if options.get("ssl_certfile") else "http"
    return Served(server, thread, f"{scheme}://127.0.0.1:{port}")


class CountingTransport(httpx.HTTPTransport):
    """Counts requests per path (to prove how often the verifier calls the broker)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.counts[request.url.path] = self.counts.get(request.url.path, 0) + 1
        return super().handle_request(request)


def poll(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def admin_source(broker: RunningBroker) -> Callable[[], str]:
    """A fresh-enough admin token for the verifier (introspection sees every app's agents;
    an app credential sees only its own agents' tokens)."""
    cached: list[tuple[str, float]] = []

    def source() -> str:
        if not cached or time.monotonic() > cached[0][1]:
            answer = broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})
            answer.raise_for_status()
            cached[:] = [(answer.json()["access_token"], time.monotonic() + 60)]
        return cached[0][0]

    return source


def dpop_proof(
    key: Any,
    *,
    htm: str,
    htu: str,
    token: str | None = None,
    iat: float | None = None,
    jti: str | None = None,
) -> str:
    """An RFC 9449 proof signed by ``key`` (a PyNaCl ``SigningKey``)."""
    import base64
    import hashlib
    import json

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(key.verify_key))},
    }
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_hex(12),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time() if iat is None else iat),
    }
    if token is not None:
        claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + b64url(key.sign(signing_input.encode()).signature)
