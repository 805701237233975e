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


def serve_app(app: Any, port: int | None = None) -> Served:
    """Run an ASGI app under uvicorn in a thread; return once it answers."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return Served(server, thread, f"http://127.0.0.1:{port}")


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
