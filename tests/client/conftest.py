"""Fixtures: real brokers on loopback (``BrokerForTests``) and a protected echo service."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasklease.client.testing import BrokerForTests


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerForTests]:
    with BrokerForTests() as running:
        yield running


@pytest.fixture(scope="session")
def limited_broker() -> Iterator[BrokerForTests]:
    with BrokerForTests(max_renewals=1) as running:
        yield running


class Served:
    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "echo service did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="session")
def echo_url(broker: BrokerForTests) -> Iterator[str]:
    """A resource server that accepts a request only with a token the broker validates,
    and echoes the token's subject, scope and delegation depth."""

    async def echo(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return JSONResponse({"error": "no token"}, 401)
        async with httpx.AsyncClient(base_url=broker.url) as client:
            answer = (await client.post("/v1/token/validate", json={"token": header[7:]})).json()
        if not answer.get("valid"):
            return JSONResponse({"error": "invalid token"}, 401)
        claims = answer["claims"]
        return JSONResponse(
            {
                "sub": claims["sub"],
                "scope": claims["scope"],
                "depth": len(claims.get("delegation_chain") or []),
                "jti": claims["jti"],
            }
        )

    served = Served(Starlette(routes=[Route("/echo", echo)]))
    yield served.url + "/echo"
    served.stop()
