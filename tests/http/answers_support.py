"""Hostile answers, for the tests of what tasklease reads from servers it does not control
(bounds.bounded_body's readers): a gzip bomb, a fake server on loopback (uvicorn in
a thread) that answers every request with what the test set, and the peak of memory
allocated while a block runs.

A bomb here is 100 MB of zeros, about 100 KB gzipped: inflated, it would take more than
100 MB of the process, which tracemalloc would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

BOMB_BYTES = 100_000_000
# What reading a refused answer may cost at most (the bomb would cost BOMB_BYTES and more).
PEAK_BYTES = 8_000_000
GZIP = {"content-encoding": "gzip"}


@cache
def bomb() -> bytes:
    """:data:`BOMB_BYTES` of zeros, gzipped."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    zeros = bytes(1_000_000)
    packed = b"".join(packer.compress(zeros) for _ in range(BOMB_BYTES // len(zeros)))
    return packed + packer.flush()


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    chunks: int = 0  # >0: the body sent this many times over, chunked, with no length
    pause: float = 0.0  # seconds before each chunk: a server that drips its answer


@dataclass(frozen=True)
class Asked:
    """What one request asked: its method, path and some of its headers."""

    method: str
    path: str
    accept_encoding: str
    authorization: str


@dataclass
class FakeServer:
    """Answers every request, on any path, with the next of ``answers`` (the last one
    stays), and records what each request asked in ``asked``."""

    answers: list[Answer] = field(default_factory=lambda: [Answer()])
    asked: list[Asked] = field(default_factory=list)
    url: str = ""

    def answer(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def reset(self) -> None:
        self.answer(Answer())
        self.asked.clear()

    @property
    def encodings(self) -> list[str]:
        """The ``accept-encoding`` each request asked for."""
        return [asked.accept_encoding for asked in self.asked]

    @property
    def paths(self) -> list[str]:
        return [asked.path for asked in self.asked]

    async def _handle(self, request: Request) -> Response:
        headers = request.headers
        self.asked.append(
            Asked(
                request.method,
                request.url.path,
                headers.get("accept-encoding", ""),
                headers.get("authorization", ""),
            )
        )
        await request.body()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        sent = {"content-type": "application/json", **answer.headers}
        if answer.chunks:

            async def body() -> AsyncIterator[bytes]:
                for _ in range(answer.chunks):
                    if answer.pause:
                        await asyncio.sleep(answer.pause)
                    yield answer.body

            return StreamingResponse(body(), answer.status, headers=sent)
        return Response(answer.body, answer.status, headers=sent)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])


@contextlib.contextmanager
def serving() -> Iterator[FakeServer]:
    """A :class:`FakeServer` on a loopback port (plain HTTP) for the block."""
    fake = FakeServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def cli_env(url: str, home: str) -> dict[str, str | None]:
    """The environment of a CLI run against ``url`` as the admin, every other TASKLEASE_
    variable of this process unset and the home (profiles, sessions) at ``home``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    env.update(
        HOME=home,
        XDG_CONFIG_HOME=f"{home}/.config",
        TASKLEASE_URL=url,
        TASKLEASE_ADMIN_SECRET="s" * 32,
    )
    return env


@dataclass
class Peak:
    bytes: int = 0


@contextlib.contextmanager
def peak_memory() -> Iterator[Peak]:
    """The most memory Python allocated (in every thread) within the block."""
    bomb()  # built before, not counted
    peak = Peak()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield peak
    finally:
        peak.bytes = tracemalloc.get_traced_memory()[1]
        if not tracing:
            tracemalloc.stop()
