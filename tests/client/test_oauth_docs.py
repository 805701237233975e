"""The SDK snippet of docs/oauth.md, run as written against a live broker and a resource
server that accepts only tokens for itself (``tasklease.verify``)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasklease.client.testing import BrokerForTests
from tasklease.verify import AppCredentials, VerificationError, Verifier

DOC = Path(__file__).resolve().parents[2] / "docs" / "oauth.md"


class _Served:
    """An ASGI app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the tickets API did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _snippet() -> str:
    found = re.search(
        r"<!-- snippet: run by tests/client/test_oauth_docs.py -->\n```python\n(.*?)```",
        DOC.read_text(),
        re.S,
    )
    assert found, "no snippet block in docs/oauth.md"
    return found.group(1)


@pytest.fixture
def tickets(broker: BrokerForTests) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A tickets API at its own URL, which is its audience; it records what it saw."""
    seen: list[dict[str, Any]] = []
    app = broker.admin().register_app(f"tickets-{time.monotonic_ns()}", ["read:data:*"])
    holder: dict[str, Verifier] = {}

    async def ticket(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        verifier = holder["verifier"]
        if not verifier.started:
            await verifier.astart()
        try:
            verified = await verifier.averify(header.removeprefix("Bearer "))
        except VerificationError as exc:
            return JSONResponse({"error": exc.reason}, 401)
        seen.append({"sub": verified.sub, "scope": list(verified.scope)})
        return JSONResponse({"ticket": request.path_params["id"]})

    served = _Served(Starlette(routes=[Route("/{id}", ticket)]))
    holder["verifier"] = Verifier(
        broker.url,
        audience=served.url,
        credentials=AppCredentials(app["client_id"], app["client_secret"]),
    )
    yield served.url, seen
    served.stop()
    holder["verifier"].close()


def test_the_sdk_snippet_runs_as_written(
    broker: BrokerForTests, tickets: tuple[str, list[dict[str, Any]]]
) -> None:
    tickets_api, seen = tickets
    app = broker.admin().register_app(
        f"desk-{time.monotonic_ns()}", ["read:tickets:*", "write:tickets:*"]
    )
    scope: dict[str, Any] = {
        "broker_url": broker.url,
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "tickets_api": tickets_api,
    }
    exec(compile(_snippet(), str(DOC), "exec"), scope)  # noqa: S102 - the doc's own code
    assert scope["answer"].status_code == 200, scope["answer"].text
    assert scope["read_only"].scope == ("read:tickets:4711",)
    assert seen == [{"sub": scope["agent"].agent_id, "scope": ["read:tickets:4711"]}]
