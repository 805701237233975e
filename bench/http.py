"""A minimal keep-alive HTTP/1.1 client for load generation (asyncio + httptools).

One connection carries one request at a time (no pipelining), like a browser or an SDK
with a connection pool. It is deliberately small so that the load generator's own cost
per request stays far below the server's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httptools


class HTTPError(Exception):
    pass


class Connection(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._closed = False
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        conn = cls(host, port)
        await loop.create_connection(lambda: conn, host, port)
        return conn

    # -- protocol callbacks ---------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Without this, Nagle + delayed ACK add ~40 ms to small request/response pairs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._fail(HTTPError("connection closed"))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body = b"".join(self._body)
        self._body = []
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- requests -------------------------------------------------------------------

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, bytes]:
        """Send one request and wait for its response: ``(status, body)``."""
        if self._closed or self._transport is None:
            raise HTTPError("connection closed")
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header + headers
        if body or method in ("POST", "PUT"):
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(head + b"\r\n" + body)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
