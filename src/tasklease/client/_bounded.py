"""What every httpx client the SDK builds sends through: answers uncompressed, and capped.

httpx asks for gzip by default and inflates an answer before anyone can count it (half a
megabyte on the wire, half a gigabyte in memory). :class:`BoundedTransport` (and its async
twin) sits between a client and the transport that does the network: it sends every
request with ``accept-encoding: identity``, refuses an answer that is compressed or whose
``content-length`` is over the cap before its body is read (``bounds.refusal``,
the verifier's rule), and stops reading one at the first chunk past the cap. A refusal is
an :class:`AnswerRefused`, an ``httpx.TransportError``, which the SDK's clients report as
their ``TransportError`` ("cannot use the broker's answer: ...").

:func:`bounded_client` and :func:`bounded_async_client` build a client as httpx would
(the caller's ``transport``, or httpx's own with the ``verify`` given and, as before, the
proxies the environment names) and put every one of its transports behind the bound. A
client the caller builds and hands to the SDK (``client=``) is used as it is.

A request to a loopback host (``localhost``, 127.0.0.0/8, ``::1``) never goes through a
proxy the environment names (``bounds.loopback_direct``, the verifier's rule too): it is
sent directly, whatever ``NO_PROXY`` says. A proxy would carry the admin secret, app
secrets and tokens meant for this machine off it, in clear. Proxies for every other host
are used as httpx would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx

from tasklease import forksafe
from tasklease.bounds import TOTAL_TIMES, loopback_direct, refusal, too_large, with_deadlines

__all__ = [
    "MAX_ADMIN_ANSWER",
    "MAX_ANSWER",
    "AnswerRefused",
    "AsyncBoundedTransport",
    "BoundedTransport",
    "bounded_async_client",
    "bounded_client",
]

# An agent's, an app's or a discovery's answer: a token and its claims (8 KB at most), a
# nonce, a delegation, a peer's handshake, metadata documents: a few KB each.
MAX_ANSWER = 1 << 20
# An admin's answers hold listings larger than that: a page of up to 1,000 audit events
# (each a detail of up to 2,048 characters beside its ids, scopes and hashes), the apps,
# operators, tenants, federations and grant types (not paged at all), the metrics' text.
# Tens of megabytes would be a broker of hundreds of thousands of apps.
MAX_ADMIN_ANSWER = 64 << 20


class AnswerRefused(httpx.RemoteProtocolError):
    """An answer compressed, or larger than the cap, refused without inflating it."""


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, limit: int, request: httpx.Request) -> None:
        self._stream = stream
        self._limit = limit
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        received = 0
        for chunk in self._stream:
            received += len(chunk)
            if received > self._limit:
                raise AnswerRefused(too_large(self._limit), request=self._request)
            yield chunk

    def close(self) -> None:
        self._stream.close()


class _AsyncCappedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, limit: int, request: httpx.Request) -> None:
        self._stream = stream
        self._limit = limit
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._stream:
            received += len(chunk)
            if received > self._limit:
                raise AnswerRefused(too_large(self._limit), request=self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def _identity(request: httpx.Request) -> None:
    # Always: a compressed answer is never wanted, whatever the caller's headers said.
    request.headers["accept-encoding"] = "identity"


class BoundedTransport(httpx.BaseTransport):
    """``inner``, its answers uncompressed and at most ``limit`` bytes (or refused)."""

    def __init__(self, inner: httpx.BaseTransport, limit: int = MAX_ANSWER) -> None:
        self.inner = inner
        self.limit = limit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _identity(request)
        response = self.inner.handle_request(request)
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):
            raise TypeError("a transport of httpx.Client answered with an async stream")
        reason = refusal(response.headers, self.limit)
        if reason is not None:
            response.close()
            raise AnswerRefused(reason, request=request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(stream, self.limit, request),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class AsyncBoundedTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`BoundedTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int = MAX_ANSWER) -> None:
        self.inner = inner
        self.limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _identity(request)
        response = await self.inner.handle_async_request(request)
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            raise TypeError("a transport of httpx.AsyncClient answered with a sync stream")
        reason = refusal(response.headers, self.limit)
        if reason is not None:
            await response.aclose()
            raise AnswerRefused(reason, request=request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncCappedStream(stream, self.limit, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


_Client = TypeVar("_Client", httpx.Client, httpx.AsyncClient)


def _deadline(timeout: httpx.Timeout) -> float | None:
    """A request's total deadline: ``TOTAL_TIMES`` the longest of its timeouts (None when
    it has none: the caller asked for none)."""
    parts = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t]
    return TOTAL_TIMES * max(parts) if parts else None


def _ending(client: _Client) -> _Client:
    """``client``, each request ending by its deadline (``bounds.with_deadlines``): a
    server that drips its answer holds no call longer."""
    seconds = _deadline(client.timeout)
    return client if seconds is None else with_deadlines(client, seconds)


def bounded_client(limit: int = MAX_ANSWER, **options: Any) -> httpx.Client:
    """``httpx.Client(**options)``, its every transport behind a :class:`BoundedTransport`
    of ``limit`` bytes, each request ending within ``TOTAL_TIMES`` its timeout, and no
    proxy for a loopback host."""
    client = loopback_direct(_ending(httpx.Client(**options)))
    client._transport = BoundedTransport(client._transport, limit)
    client._mounts = {
        pattern: None if inner is None else BoundedTransport(inner, limit)
        for pattern, inner in client._mounts.items()
    }
    forksafe.track(client)  # a forked child opens connections of its own
    return client


def bounded_async_client(limit: int = MAX_ANSWER, **options: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**options)``, its every transport behind an
    :class:`AsyncBoundedTransport` of ``limit`` bytes, each request ending within
    ``TOTAL_TIMES`` its timeout, and no proxy for a loopback host."""
    client = loopback_direct(_ending(httpx.AsyncClient(**options)))
    client._transport = AsyncBoundedTransport(client._transport, limit)
    client._mounts = {
        pattern: None if inner is None else AsyncBoundedTransport(inner, limit)
        for pattern, inner in client._mounts.items()
    }
    forksafe.track(client)  # a forked child opens connections of its own
    return client
