"""The HTTP/1.1 protocol the broker serves with: uvicorn's httptools protocol with
TCP_NODELAY, one send per response, deadlines on request headers and bodies (slow clients)
and a cap on the connections a process holds."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tasklease.core.config import Config
from tasklease.http.access import ANSWERED_BY_SERVER
from tasklease.http.middleware import envelope_headers
from tasklease.http.problems import TYPE_PREFIX, status_for
from tasklease.http.ratelimit import client_key
from tasklease.http.tls import TLSScopeMixin

__all__ = ["MTLSNoDelayHttpToolsProtocol", "NoDelayHttpToolsProtocol", "http_protocol"]

_log = logging.getLogger("tasklease.http")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# Requests a connection may send ahead of the answers it has not read yet.
MAX_PIPELINED = 16
# Bytes a request's line and headers may take (more than asyncio reads at once, 256 KiB:
# the count is per read).
MAX_HEADER_BYTES = 512 * 1024


def _closing_answer(
    code: str, detail: str, *headers: bytes, envelope: tuple[tuple[bytes, bytes], ...]
) -> bytes:
    """A whole problem response (RFC 9457) that closes its connection, for the protocol to
    write before the application has a request: without ``instance``, with a request id of
    its own and the headers every answer of the envelope carries (``X-Request-ID``, the
    security headers with HSTS under TLS, ``no-store``): ``envelope``, the protocol's
    :func:`~tasklease.http.middleware.envelope_headers`."""
    status = status_for(code)
    request_id = secrets.token_hex(8)
    body = msgspec.json.encode(
        {
            "type": TYPE_PREFIX + code,
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "error_code": code,
            "request_id": request_id,
        }
    )
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode()),
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % (len(body) + 1),
            *(b"%s: %s\r\n" % pair for pair in envelope),
            b"x-request-id: %s\r\n" % request_id.encode(),
            *headers,
            b"connection: close\r\n\r\n",
            body,
            b"\n",
        )
    )


# What a connection whose request headers or body are late receives before it is closed
# (RFC 9110 section 15.5.9: a 408 says the server closes the connection). Each made when
# it is written, with a request id of its own.
_HEADERS_LATE_RESPONSE = functools.partial(
    _closing_answer, "request_timeout", "the request headers did not arrive in time"
)
_BODY_LATE_RESPONSE = functools.partial(
    _closing_answer, "request_timeout", "the request body did not arrive in time"
)
_HEADERS_TOO_LARGE_RESPONSE = functools.partial(
    _closing_answer,
    "headers_too_large",
    f"the request line and headers exceed {MAX_HEADER_BYTES} bytes",
)
# What a connection past the process's cap receives, as it arrives, before it is closed.
_BUSY_RESPONSE = functools.partial(
    _closing_answer,
    "service_unavailable",
    "the broker holds as many connections as it accepts; retry",
    b"retry-after: 1\r\n",
)
# What a request the parser refuses receives (a method or request target it does not
# take, a body framed twice, a folded or malformed header): uvicorn answered a bare
# ``text/plain`` 400 without the envelope's headers.
_MALFORMED_RESPONSE = functools.partial(
    _closing_answer, "invalid_request", "the request is not HTTP/1.1 the broker accepts"
)


class _Cut(Exception):
    """Raised from a parser callback to stop parsing a connection that is being closed
    (the parser stops at once; uvicorn takes it as a malformed request, whose answer the
    closing transport drops)."""


class _TurnedAway:
    """Connections turned away for one reason, logged as one warning a minute at most."""

    EVERY = 60.0

    def __init__(self, what: str) -> None:
        self._what = what
        self._since = 0
        self._logged = -self.EVERY

    def count(self, cap: int) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._logged >= self.EVERY:
            _log.warning(
                "turned away %d connection(s) with 503: %s (%d)", self._since, self._what, cap
            )
            self._since, self._logged = 0, now


_OVER_CAP = _TurnedAway("this process holds http_max_connections connections")
_OVER_CLIENT_CAP = _TurnedAway(
    "each from a client holding http_max_connections_per_client connections"
)
# Connections this process holds per client (``client_key`` of the TCP peer), peers in
# ``trusted_proxies`` left out; a client holding none has no entry.
_HELD: dict[str, int] = {}


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _client_of(transport: Any, trusted: tuple[str, ...]) -> str | None:
    """The client a connection counts for, or None: a trusted proxy, or no IP peer."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    for net in _networks(trusted):
        if address in net or (mapped is not None and mapped in net):
            return None
    return client_key(str(address))


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``TCP_NODELAY`` on every accepted connection, and
    a deadline for each request's headers.

    With ``--workers`` uvicorn binds the socket in the parent as ``socket.socket(AF_INET,
    SOCK_STREAM)`` (``proto`` 0); asyncio only sets ``TCP_NODELAY`` on sockets whose
    ``proto`` is ``IPPROTO_TCP``, so the workers' connections kept Nagle's algorithm and
    every small response waited for the client's delayed ACK: 40-44 ms per request
    (measured with ``make bench``: 720 requests/s at 44 ms p50 for an empty endpoint).

    uvicorn bounds only an idle keep-alive connection (``timeout_keep_alive``), and any
    byte cancels that: a client that sends its headers a byte at a time held its
    connection for ever (1,000 of them, 1,000 connections and descriptors). Here a
    request's headers must be complete within ``header_timeout`` seconds of its first
    byte (of the connection, for the first request), or the connection is answered 408
    and closed. Its body must then be complete within ``body_timeout`` seconds of the
    headers, or the same: a client that sent its headers and trickled its body held the
    connection and the request's task for ever. The body's deadline is armed only when
    the bytes received so far leave the body incomplete; a request that arrives whole, as
    nearly all do, costs no timer.

    A process holds at most ``max_connections`` connections, and at most
    ``max_per_client`` of one client's (its peer address, an IPv6 one by its /64; a peer
    in ``trusted_proxies`` is not limited): one more is answered 503 and closed as it
    arrives, so connections held open (idle, trickling, or simply many) cannot take the
    descriptors the process needs for its database and its other clients, and one client
    alone cannot take them all. Pass these with :func:`http_protocol`.

    What it answers itself carries ``envelope``: the headers of the envelope's answers
    (:func:`~tasklease.http.middleware.envelope_headers`, HSTS under TLS).
    """

    def __init__(
        self,
        *args: Any,
        envelope: tuple[tuple[bytes, bytes], ...],
        header_timeout: float = 10.0,
        body_timeout: float = 10.0,
        max_connections: int | None = None,
        max_per_client: int | None = None,
        trusted_proxies: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._envelope = envelope
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._max_connections = max_connections
        self._max_per_client = max_per_client
        self._trusted = trusted_proxies
        self._client: str | None = None
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._body_pending = False
        self._turned_away = False
        self._cut_off = False
        # A request of the connection was refused by the parser (``send_400_response``).
        self._malformed = False
        # Bytes received while the current request's headers are incomplete (counted per
        # read, so over by at most one read; reset when they are complete).
        self._header_bytes = 0
        self._headers_pending = True

    def connection_made(self, transport: Any) -> None:
        if self._max_connections is not None and len(self.connections) >= self._max_connections:
            self._turn_away(transport)
            _OVER_CAP.count(self._max_connections)
            return
        if self._max_per_client is not None:
            client = _client_of(transport, self._trusted)
            if client is not None:
                held = _HELD.get(client, 0)
                if held >= self._max_per_client:
                    self._turn_away(transport)
                    _OVER_CLIENT_CAP.count(self._max_per_client)
                    return
                _HELD[client] = held + 1
                self._client = client
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(cast("asyncio.Transport", _CoalescingTransport(transport)))
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self._turned_away or self._cut_off or self._malformed:
            return
        super().data_received(data)  # a _Cut in a callback ends it as a parser error
        if self._cut_off:
            return
        if self._headers_pending:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._cut(_HEADERS_TOO_LARGE_RESPONSE(envelope=self._envelope))
                return
        self._await_body()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._malformed:
            self._answer_malformed()
            return
        self._await_body()  # a pipelined request, waiting until now, has started

    def connection_lost(self, exc: Exception | None) -> None:
        if self._turned_away:
            return
        self._let_go()
        super().connection_lost(exc)

    def _let_go(self) -> None:
        """Stop the deadlines and give the client's share back (once)."""
        self._headers_arrived()
        self._body_arrived()
        if self._client is not None:
            left = _HELD.pop(self._client) - 1
            if left:
                _HELD[self._client] = left
            self._client = None

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            # Requests sent ahead of their answers, which the client does not read: each
            # queued one holds its parsed request. Stop parsing; the connection closes.
            self._cut(b"")
            raise _Cut
        super().on_message_begin()
        if self._header_deadline is None:  # a later request on a kept-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        self._headers_pending = False
        self._header_bytes = 0
        self._body_pending = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_arrived()
        self._headers_pending = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refused: a problem with the envelope's headers, then the
        connection closed (uvicorn's answer, ``msg``, is a bare ``text/plain``).

        Not before the answers to the requests ahead of it on the connection (pipelined
        in the same read): uvicorn wrote it at once and closed, so the answer to the
        request ahead, which still ran (a revocation committed), never came, and its
        client read this 400 as that request's answer. Now it is written once they are
        answered; nothing more of the connection is read.
        """
        self._malformed = True
        self._headers_arrived()  # refused: no deadline for headers that will not be read
        self._answer_malformed()

    def _answer_malformed(self) -> None:
        """Write the malformed request's answer and close, once no answer is ahead of it."""
        if self.transport.is_closing():
            return
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return  # on_response_complete calls again
        self.transport.write(_MALFORMED_RESPONSE(envelope=self._envelope))
        self.transport.close()

    def _cut(self, answer: bytes) -> None:
        """Close the connection now (with ``answer`` first, when it is not empty); what
        else it sends is not read."""
        self._cut_off = True
        if answer and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(answer)
        self.transport.close()

    def _turn_away(self, transport: Any) -> None:
        self._turned_away = True
        transport.write(_BUSY_RESPONSE(envelope=self._envelope))
        transport.close()

    def _await_headers(self) -> None:
        self._header_deadline = self.loop.call_later(self._header_timeout, self._headers_late)

    def _headers_arrived(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _await_body(self) -> None:
        """Arm the body's deadline if the running request's body is incomplete.

        Not for a pipelined request queued behind another's response: reading is paused
        until its turn (``on_response_complete``), so its body cannot arrive before.
        """
        if (
            self._body_pending
            and self._body_deadline is None
            and not self.pipeline
            and not self.transport.is_closing()
        ):
            self._body_deadline = self.loop.call_later(self._body_timeout, self._body_late)

    def _body_arrived(self) -> None:
        self._body_pending = False
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_late(self) -> None:
        self._body_deadline = None
        self._body_pending = False
        if self.transport.is_closing() or self.cycle is None:
            return
        if not self.cycle.response_started:
            # The application, still waiting for the body, ends without an answer when the
            # connection closes: the access log and metrics take the status from here.
            cast("dict[str, Any]", self.cycle.scope)[ANSWERED_BY_SERVER] = 408
            self.transport.write(_BODY_LATE_RESPONSE(envelope=self._envelope))
        self.transport.close()

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            # Not while an earlier (pipelined) response is being written: only close then.
            self.transport.write(_HEADERS_LATE_RESPONSE(envelope=self._envelope))
        self.transport.close()


class MTLSNoDelayHttpToolsProtocol(TLSScopeMixin, NoDelayHttpToolsProtocol):
    """With ``tls_mode = "mtls"``: the client certificate in every scope (``http.tls``)."""


def http_protocol(config: Config) -> Callable[..., HttpToolsProtocol]:
    """The protocol uvicorn builds for each connection (its ``http`` option): ours, with
    ``http_header_timeout``, ``http_body_timeout`` and ``http_max_connections``, and the
    envelope's headers for its own answers; with the client certificate in the scope under
    mTLS.

    A partial of a module-level class, so it reaches spawned workers by pickling.
    """
    kind = MTLSNoDelayHttpToolsProtocol if config.tls_mode == "mtls" else NoDelayHttpToolsProtocol
    return functools.partial(
        kind,
        header_timeout=config.http_header_timeout,
        body_timeout=config.http_body_timeout,
        max_connections=config.http_max_connections,
        max_per_client=config.http_max_connections_per_client,
        trusted_proxies=tuple(config.trusted_proxies),
        envelope=envelope_headers(config),
    )


class _CoalescingTransport:
    """Joins the writes made in one event-loop step into one ``send``.

    uvicorn writes a response's status line and headers, then its body, as two writes:
    two system calls and two TCP segments per response. The profile of a saturated worker
    showed ``transport.write`` as the largest single cost (~39 % of samples on
    ``/v1/token/validate``). Writes are buffered and flushed once by a ``call_soon``
    callback, which runs as soon as the handler yields; ``close`` and ``write_eof`` flush
    first, so nothing is reordered or lost.
    """

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._buffer: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer = []
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
