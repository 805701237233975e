"""Bounds on what a client reads from a server it does not control: a total deadline for
an httpx client's requests, a response body and an event stream's lines read off the wire
with a length cap. Used by the verifier, the broker's federation followers and its
attestation key fetches, and by the SDK's transport (``tasklease.client``).

httpx's timeouts bound each network operation (a connect, one read), not a request: a
server that sends a byte every few seconds keeps a request going for as long as it likes.
:func:`total_deadline` closes the client once the deadline passes, which fails whatever
request is under way with an ``httpx.TransportError`` (a read on a closed socket).

A body is counted as it arrives, never inflated: httpx decompresses what the server
compressed before anyone can count it (gzip inflates up to a thousandfold: half a
megabyte on the wire, half a gigabyte in memory), so :func:`bounded_body` and
:func:`bounded_lines` refuse a compressed answer. Their requests ask for
``accept-encoding: identity`` and are sent streaming (``client.stream(...)``): otherwise
httpx reads, and inflates, the whole body before it returns the response.

:func:`bounded_get` puts them together for a document fetched from an ``https`` endpoint
another party runs (a federated domain's trust bundle): every bound above, temporary
redirects to ``https`` only, no proxy or CA bundle taken from the environment.

:func:`loopback_direct` takes a client's requests for a loopback host (``localhost``,
127.0.0.0/8, ``::1``: ``rules.cleartext``, the rule that lets credentials go there over
plain HTTP) off the proxies the environment names (``HTTP_PROXY``, ``ALL_PROXY``): they
are sent directly, whatever ``NO_PROXY`` says. A proxy would carry an admin secret, app
secrets, tokens and the keys meant for this machine off it, in clear. Used by the SDK's
clients and the verifier's.

:func:`with_deadlines` gives every request of a client a total deadline of its own (a
multiple of its timeout) without closing the client, whose other requests (a feed's
stream) go on: each connect, TLS handshake, read and write of the request, its body's
included, is given what is left of the request's deadline at most, and fails with httpx's
timeout once none is left. A request sent with the extension :data:`NO_DEADLINE` (an event
stream that never ends by design) keeps httpx's per-operation timeouts only.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import email.utils
import json
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from tasklease.rules.cleartext import is_loopback_host

__all__ = [
    "MAX_EXPIRES_IN",
    "MAX_REDIRECTS",
    "MAX_SIGN_IN_BYTES",
    "NO_DEADLINE",
    "TOTAL_TIMES",
    "AsyncDeadlineTransport",
    "AsyncLoopbackDirect",
    "DeadlineTransport",
    "FetchFailed",
    "LoopbackDirect",
    "bounded_body",
    "bounded_get",
    "bounded_lines",
    "check_transports",
    "https_url",
    "json_document",
    "lifetime",
    "loopback_direct",
    "number_within",
    "read_app_token",
    "refusal",
    "retry_after_seconds",
    "too_large",
    "total_deadline",
    "with_deadlines",
]

TOTAL_TIMES = 3  # a bounded fetch ends within this many of its timeouts
# An app sign-in's answer is a token and its lifetime: a few hundred bytes.
MAX_SIGN_IN_BYTES = 65536
# A lifetime past this (68 years) is not one: 10**400 seconds would not even be a float.
MAX_EXPIRES_IN = 2**31 - 1
MAX_REDIRECTS = 3
# Delay-seconds (RFC 9110 section 10.2.3): ASCII digits only (``str.isdigit`` takes ``²``
# and other digits ``int`` refuses), and not so many that the number means nothing (300
# years): 400 of them are no float, 5000 no int ``int()`` reads.
_DELAY_SECONDS = re.compile(r"[0-9]{1,10}")
_REDIRECTS = frozenset((302, 303, 307))  # temporary ones (SPIFFE Federation section 5.1)

_Client = TypeVar("_Client", httpx.Client, httpx.AsyncClient)
# A request extension: this request has no total deadline (with_deadlines).
NO_DEADLINE = "tasklease.no_deadline"
# When (time.monotonic) the request under way in this thread or task must have ended.
_ends_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tasklease_request_ends_at", default=None
)


class FetchFailed(Exception):
    """:func:`bounded_get` got no acceptable answer; ``reason`` says why, briefly."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@contextlib.contextmanager
def total_deadline(client: httpx.Client, seconds: float) -> Iterator[None]:
    """Within the block, ``client``'s requests end by ``seconds`` from its start: then the
    client is closed (from a timer thread), and the request under way fails."""
    timer = threading.Timer(seconds, client.close)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _left(timeout: float | None, late: type[Exception]) -> float | None:
    """``timeout``, or what is left of the deadline of the request under way when less;
    raises ``late`` when nothing is."""
    ends_at = _ends_at.get()
    if ends_at is None:
        return timeout
    left = ends_at - time.monotonic()
    if left <= 0:
        raise late("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation ends by the deadline of the request using it."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    """The async twin of :class:`_DeadlineStream`."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        inner = await self.inner.start_tls(ssl_context, server_hostname, wait)
        return _AsyncDeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """``inner``'s connections, each a :class:`_DeadlineStream`."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        stream = self.inner.connect_tcp(host, port, wait, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self.inner.connect_unix_socket(path, wait, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _AsyncDeadlineBackend(httpcore.AsyncNetworkBackend):
    """The async twin of :class:`_DeadlineBackend`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        stream = await self.inner.connect_tcp(host, port, wait, local_address, socket_options)
        return _AsyncDeadlineStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        stream = await self.inner.connect_unix_socket(path, wait, socket_options)
        return _AsyncDeadlineStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _EndingStream(httpx.SyncByteStream):
    """A response body whose every read is made within its request's deadline."""

    def __init__(self, inner: httpx.SyncByteStream, ends_at: float) -> None:
        self.inner = inner
        self.ends_at = ends_at

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self.inner)
        while True:
            token = _ends_at.set(self.ends_at)
            try:
                chunk = next(chunks, None)
            finally:
                _ends_at.reset(token)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _AsyncEndingStream(httpx.AsyncByteStream):
    """The async twin of :class:`_EndingStream`."""

    def __init__(self, inner: httpx.AsyncByteStream, ends_at: float) -> None:
        self.inner = inner
        self.ends_at = ends_at

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self.inner)
        while True:
            token = _ends_at.set(self.ends_at)
            try:
                chunk = await anext(chunks, None)
            finally:
                _ends_at.reset(token)
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class DeadlineTransport(httpx.BaseTransport):
    """``inner``, each request ending ``seconds`` after it is sent (:func:`with_deadlines`)."""

    def __init__(self, inner: httpx.BaseTransport, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(NO_DEADLINE):
            return self.inner.handle_request(request)
        ends_at = time.monotonic() + self.seconds
        token = _ends_at.set(ends_at)
        try:
            response = self.inner.handle_request(request)
        finally:
            _ends_at.reset(token)
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):
            raise TypeError("a transport of httpx.Client answered with an async stream")
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_EndingStream(stream, ends_at),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class AsyncDeadlineTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`DeadlineTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(NO_DEADLINE):
            return await self.inner.handle_async_request(request)
        ends_at = time.monotonic() + self.seconds
        token = _ends_at.set(ends_at)
        try:
            response = await self.inner.handle_async_request(request)
        finally:
            _ends_at.reset(token)
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            raise TypeError("a transport of httpx.AsyncClient answered with a sync stream")
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncEndingStream(stream, ends_at),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def with_deadlines(client: _Client, seconds: float) -> _Client:
    """``client``, each of its requests (but one sent with the extension
    :data:`NO_DEADLINE`) ending ``seconds`` after it is sent: its connection's every
    operation is given what is left at most. Applies to the transports httpx built for the
    client (its own and the proxies the environment names); a ``transport`` the caller
    gave is the caller's and unchanged. Call it before :func:`loopback_direct`. Returns
    ``client``.

    Raises:
        RuntimeError: this httpx keeps its transports elsewhere (:func:`check_transports`),
            or its transports keep their connection pool elsewhere.
    """
    check_transports(client)
    if isinstance(client, httpx.Client):
        sync_wrap = _sync_deadline(seconds)
        client._transport = sync_wrap(client._transport)
        client._mounts = {
            pattern: None if inner is None else sync_wrap(inner)
            for pattern, inner in client._mounts.items()
        }
    else:
        async_wrap = _async_deadline(seconds)
        client._transport = async_wrap(client._transport)
        client._mounts = {
            pattern: None if inner is None else async_wrap(inner)
            for pattern, inner in client._mounts.items()
        }
    return client


def _pool_of(transport: httpx.HTTPTransport | httpx.AsyncHTTPTransport) -> Any:
    """The connection pool httpx keeps its connections in (``_pool`` since 0.18), whose
    connections httpcore opens through its ``_network_backend``."""
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx keeps its connections elsewhere: no deadline applies")
    return pool


def _sync_deadline(seconds: float) -> Callable[[httpx.BaseTransport], httpx.BaseTransport]:
    def wrap(transport: httpx.BaseTransport) -> httpx.BaseTransport:
        if not isinstance(transport, httpx.HTTPTransport):
            return transport  # the caller's own
        pool = _pool_of(transport)
        pool._network_backend = _DeadlineBackend(pool._network_backend)
        return DeadlineTransport(transport, seconds)

    return wrap


def _async_deadline(
    seconds: float,
) -> Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]:
    def wrap(transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        if not isinstance(transport, httpx.AsyncHTTPTransport):
            return transport  # the caller's own
        pool = _pool_of(transport)
        pool._network_backend = _AsyncDeadlineBackend(pool._network_backend)
        return AsyncDeadlineTransport(transport, seconds)

    return wrap


class LoopbackDirect(httpx.BaseTransport):
    """``proxy`` for every host but a loopback one, which ``direct`` serves. Closing it
    closes ``proxy``: ``direct`` is the client's own transport, which the client closes."""

    def __init__(self, proxy: httpx.BaseTransport, direct: httpx.BaseTransport) -> None:
        self.proxy = proxy
        self.direct = direct

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chosen = self.direct if is_loopback_host(request.url.host) else self.proxy
        return chosen.handle_request(request)

    def close(self) -> None:
        self.proxy.close()


class AsyncLoopbackDirect(httpx.AsyncBaseTransport):
    """The async twin of :class:`LoopbackDirect`."""

    def __init__(self, proxy: httpx.AsyncBaseTransport, direct: httpx.AsyncBaseTransport) -> None:
        self.proxy = proxy
        self.direct = direct

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chosen = self.direct if is_loopback_host(request.url.host) else self.proxy
        return await chosen.handle_async_request(request)

    async def aclose(self) -> None:
        await self.proxy.aclose()


def check_transports(client: httpx.Client | httpx.AsyncClient) -> None:
    """Raises ``RuntimeError`` unless ``client`` keeps its transport and those mounted for
    proxies where httpx has kept them since 0.18 (``_transport``, ``_mounts``): were they
    gone, a rule put on them would silently not apply."""
    if not hasattr(client, "_transport") or not isinstance(getattr(client, "_mounts", None), dict):
        raise RuntimeError("this httpx keeps its transports elsewhere: no bound can apply to them")


def loopback_direct(client: _Client) -> _Client:
    """``client``, each proxy it mounted (those the environment names: httpx mounts them
    for a client built without a ``transport``) used for every host but a loopback one,
    which the client's own transport serves directly. A client given a ``transport`` has
    no such proxy and is unchanged. Returns ``client``.

    Raises:
        RuntimeError: this httpx keeps its transports elsewhere (:func:`check_transports`).
    """
    check_transports(client)
    if isinstance(client, httpx.Client):
        direct = client._transport
        client._mounts = {
            pattern: None if inner is None else LoopbackDirect(inner, direct)
            for pattern, inner in client._mounts.items()
        }
    else:
        adirect = client._transport
        client._mounts = {
            pattern: None if inner is None else AsyncLoopbackDirect(inner, adirect)
            for pattern, inner in client._mounts.items()
        }
    return client


def bounded_body(response: httpx.Response, limit: int) -> bytes:
    """The body of ``response`` (opened streaming), read from the bytes on the wire, at
    most ``limit`` bytes of it: reading stops at the first chunk past ``limit``, and a
    ``content-length`` declaring more is refused before anything is read. A compressed
    body is refused, not inflated.

    Raises:
        ValueError: a compressed body, or one larger than ``limit`` bytes.
        httpx.HTTPError: reading failed (a timeout, a connection closed).
    """
    refused = refusal(response.headers, limit)
    if refused is not None:
        raise ValueError(refused)
    # A response read already (a transport that is no network: a test's mock) is its body.
    if response.is_stream_consumed:
        if len(response.content) > limit:
            raise ValueError(too_large(limit))
        return response.content
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limit:
            raise ValueError(too_large(limit))
    return bytes(body)


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (RFC 9110 section 10.2.3: delay-seconds,
    at most ten digits, or an HTTP-date against ``now``, a Unix time), a finite number not
    below 0; ``None`` when absent or unreadable. The SDK's and the verifier's reading."""
    if not value:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" (RFC 5322 section 3.3): an HTTP-date is UTC anyway
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def refusal(headers: httpx.Headers, limit: int) -> str | None:
    """Why an answer with ``headers`` is refused before its body is read, or None: it is
    compressed, or its ``content-length`` declares more than ``limit`` bytes."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        return f"a compressed body ({encoding[:40]}) is refused"
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        digits = declared.lstrip("0")
        # Compared by length first: int() of a few thousand digits raises.
        if len(digits) > len(str(limit)) or (digits and int(digits) > limit):
            return too_large(limit)
    return None


def too_large(limit: int) -> str:
    """The reason a body past ``limit`` bytes is refused."""
    return f"a body larger than {limit} bytes is refused"


def bounded_lines(response: httpx.Response, limit: int) -> Iterator[str]:
    """A server-sent event stream's lines (without their ``\n`` or ``\r\n``), read from
    the bytes on the wire: none may be longer than ``limit`` bytes, and the stream must not
    be compressed (it is asked for as ``identity``), so a hostile or broken server cannot
    make the reader buffer an endless line or inflate a small answer.

    Raises:
        ValueError: a line longer than ``limit``, or a compressed stream.
    """
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise ValueError(f"a compressed event stream ({encoding}) is refused")
    pending = bytearray()
    # A response read already (a transport that is no network: a test's mock) is its body.
    chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
    for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            line = bytes(pending[start:end])
            start = end + 1
            if len(line) > limit:
                raise ValueError("event stream line too long")
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
        del pending[:start]
        if len(pending) > limit:
            raise ValueError("event stream line too long")


def https_url(url: str) -> bool:
    """True for an ``https`` URL with a host, a well-formed port and no userinfo."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc


def bounded_get(url: str, *, context: ssl.SSLContext, timeout: float, limit: int) -> bytes:
    """The body served at ``url``: each read within ``timeout`` seconds and the whole fetch
    within :data:`TOTAL_TIMES` times that, at most ``limit`` bytes, uncompressed, following
    at most :data:`MAX_REDIRECTS` temporary redirects, each to an ``https`` URL (never
    remembered). The server's certificate is checked by ``context``.

    Raises:
        FetchFailed: the URL or a redirect is not an allowed ``https`` URL, the connection
            or the TLS handshake failed, the status is not 200, the body is compressed or
            too large, or the deadline passed.
    """
    with (
        httpx.Client(
            verify=context,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy or CA bundle from the environment decides whom we trust
            headers={"accept": "application/json", "accept-encoding": "identity"},
        ) as client,
        total_deadline(client, TOTAL_TIMES * timeout),
    ):
        for _ in range(MAX_REDIRECTS + 1):
            if not https_url(url):
                raise FetchFailed("not an https URL without userinfo")
            try:
                with client.stream("GET", url) as response:
                    if response.status_code in _REDIRECTS:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise FetchFailed(f"HTTP status {response.status_code}")
                    return bounded_body(response, limit)
            except ValueError as exc:
                raise FetchFailed(str(exc)) from None
            except (httpx.HTTPError, RuntimeError) as exc:
                # The deadline closes the client: a read under way fails (an HTTPError),
                # a request not yet sent is refused (a RuntimeError, after a redirect).
                if client.is_closed:
                    raise FetchFailed(f"no answer within {TOTAL_TIMES * timeout:g} s") from None
                if isinstance(exc, RuntimeError):
                    raise
                raise FetchFailed(_describe(exc)) from None
        raise FetchFailed("too many redirects")


def _describe(exc: httpx.HTTPError) -> str:
    """A short, stable reason: the exception's class, and for TLS the verification error."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: {cause.verify_message or 'certificate verification failed'}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or 'handshake failed'}"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def json_document(body: bytes | str) -> Any:
    """``body`` decoded as JSON: an answer, or a file the CLI is given.

    Raises:
        ValueError: it is not JSON, or nests too deeply to decode (the decoder's
            ``RecursionError``: 60 KB of ``[`` fits under every cap of this module).
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def number_within(value: object, low: float, high: float) -> int | float | None:
    """``value`` when it is a JSON number (an int or a float, never a bool) from ``low``
    to ``high``; else None. Compared, never converted: JSON integers are read exactly, so
    a number from the other side may be one no float holds (``float`` raises
    ``OverflowError``), and a float may be NaN or infinite (the decoder takes both)."""
    if type(value) is int or type(value) is float:
        return value if low <= value <= high else None
    return None


def lifetime(value: object) -> int | None:
    """``value`` when it is a token's lifetime as an answer gives it (``expires_in``): an
    integer of 1 to :data:`MAX_EXPIRES_IN` seconds (never a bool); else None."""
    return value if type(value) is int and 0 < value <= MAX_EXPIRES_IN else None


def read_app_token(response: httpx.Response) -> tuple[str, int]:
    """The token and its lifetime in seconds from the answer to an app sign-in
    (``POST /v1/app/auth``, opened streaming), read with :func:`bounded_body` at most
    :data:`MAX_SIGN_IN_BYTES`.

    Raises:
        ValueError: the answer is compressed, too large, or not a token (not a JSON object
            with a non-empty string ``access_token`` and an integer ``expires_in`` from 1
            to :data:`MAX_EXPIRES_IN`).
        httpx.HTTPError: reading it failed.
    """
    answer = bounded_body(response, MAX_SIGN_IN_BYTES)
    try:
        body = json_document(answer)
    except ValueError:
        body = None
    token = body.get("access_token") if type(body) is dict else None
    expires_in = body.get("expires_in") if type(body) is dict else None
    seconds = lifetime(expires_in)
    if type(token) is not str or not token or seconds is None:
        raise ValueError("the answer is not an app token")
    return token, seconds
