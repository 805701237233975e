"""The revocation feed for resource servers: a snapshot with a cursor, and a live stream.

``GET /v1/revocations[?cursor=C]`` answers the unexpired entries (all of them, or those
after the cursor) and the cursor to continue from. ``GET /v1/revocations/stream`` sends
the same entries as server-sent events (the WHATWG HTML "server-sent events" format),
then every revocation this process learns of, as it learns it:

* ``event: revocation`` with ``id:`` the entry's anchored cursor (its ``seq`` and
  fingerprint, ``core.feedcursor``) and the entry as JSON ``data:`` (an entry sent as it
  happens also carries ``sent_at``, when it was sent);
* ``event: sync`` once the backlog is out (``data: {"cursor": N, "next_cursor": C,
  "server_time": T}``, ``id:`` C): from here on the reader is current;
* ``: keepalive`` comments every ``heartbeat`` seconds, so a reader can tell a quiet feed
  from a dead one and fail closed when it hears nothing for too long.

Both need an admin or app token. A stream ends when that token expires or is revoked (the
reader reconnects with a fresh token and its cursor, or ``Last-Event-ID``), when its reader falls
more than ``queue_size`` entries behind, or when one write blocks for ``write_timeout``
seconds: a reader that does not read is dropped, never buffered for ever. Every stream
also ends when the database went back in time (decision 139): its reader reconnects with
its cursor, and the feed checks it against the store's history. And every stream on a
tenant ends as soon as the process stops serving that tenant (``Broker.stop_serving``: it
was removed, here or by another process, which this one notices within
``tasklease.tenancy.RECHECK``): its reader, reconnecting, is answered 404, and a verifier
hears nothing more of the feed, so it fails closed past its staleness bound rather than
being kept current by keepalives.

A stream holds a slot of the process's ``core.feedstreams.StreamSlots`` from before it
starts until it ends, however it ends (decision 140): a reader holds at most
``feed_streams_per_reader`` streams in a process, the process at most
``feed_streams_per_process``; one more is refused with an audited 429.

One :class:`RevocationHub` per application wakes on the broker's revocation listener,
reads the new entries from the store once, and fans them out to the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.feedcursor import FeedPage, fingerprint, format_cursor, parse_cursor
from tasklease.core.feedstreams import Slot
from tasklease.core.records import RevocationRecord
from tasklease.core.tokens import Claims
from tasklease.http import wire

__all__ = ["HEARTBEAT_SECONDS", "RevocationHub", "revocation_routes"]

HEARTBEAT_SECONDS = 2.0
"""Keepalive period of the stream; verifiers fail closed after ``max_feed_staleness``."""
QUEUE_SIZE = 1024
WRITE_TIMEOUT = 10.0
RETRY_MILLISECONDS = 1000

_log = logging.getLogger("tasklease.http.feed")
_encoder = msgspec.json.Encoder()
_KEEPALIVE = b": keepalive\n\n"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Request], Awaitable[Response]]


def _event(record: RevocationRecord, sent_at: float | None = None) -> bytes:
    data = _encoder.encode(wire.revocation_entry(record, sent_at))
    ident = format_cursor(record.seq, fingerprint(record)).encode()
    return b"id: %s\nevent: revocation\ndata: %s\n\n" % (ident, data)


def _sync_event(page: FeedPage, server_time: float) -> bytes:
    next_cursor = page.next_cursor
    sync = wire.RevocationSync(cursor=page.cursor, next_cursor=next_cursor, server_time=server_time)
    return b"id: %s\nevent: sync\ndata: %s\n\n" % (next_cursor.encode(), _encoder.encode(sync))


class _Subscription:
    __slots__ = ("dropped", "queue", "since", "wake")

    def __init__(self, size: int, since: int) -> None:
        self.queue: asyncio.Queue[RevocationRecord] = asyncio.Queue(size)
        self.dropped = False
        # Set when the stream is to stop waiting for entries: the hub dropped it, or its
        # reader hung up.
        self.wake = asyncio.Event()
        # The hub's cursor when it subscribed: the hub hands it only entries past it.
        self.since = since

    def drop(self) -> None:
        """End the stream: it stops at once, not at its next keepalive."""
        self.dropped = True
        self.wake.set()


class RevocationHub:
    """Reads new revocation entries once per wake-up and hands them to every stream.

    Started lazily on the event loop of the first stream (and again if that loop is
    replaced, as in tests that run each request in a fresh loop).
    """

    def __init__(self, broker: Broker, *, queue_size: int = QUEUE_SIZE) -> None:
        self._broker = broker
        self._queue_size = queue_size
        self._subscriptions: set[_Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._cursor = 0
        self._anchor = ""
        self._reloads = 0
        # True from a failed read of new entries until one succeeds: this process may
        # enforce revocations its streams have not sent (see :attr:`behind`).
        self._behind = False

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    @property
    def behind(self) -> bool:
        """Whether the last read of new entries failed: revocations this process enforces
        may be unsent, and no stream may tell its reader it is current (a keepalive)."""
        return self._behind

    async def subscribe(self) -> _Subscription:
        """A new stream's subscription; dropped already when the broker no longer serves
        its tenant (the stream then ends once its backlog is out)."""
        if self._broker.serving:
            await self._ensure_started()
        subscription = _Subscription(self._queue_size, self._cursor)
        if self._broker.serving:
            self._subscriptions.add(subscription)
        else:
            subscription.drop()
        return subscription

    def unsubscribe(self, subscription: _Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        await self.close()
        self._loop = loop
        wake = self._wake = asyncio.Event()
        self._reloads = self._broker.revocation_reloads
        page = await run_in_threadpool(self._broker.revocation_feed, None)
        self._cursor, self._anchor = page.cursor, page.anchor

        def listener() -> None:  # any thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(wake.set)

        self._remove_listener = self._broker.add_revocation_listener(listener)
        self._task = loop.create_task(self._run(wake))

    async def close(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the task's loop is gone
                task.cancel()
                if task.get_loop() is asyncio.get_running_loop():
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._subscriptions.clear()

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            if not self._broker.serving:
                # Its tenant is no longer served here (Broker.stop_serving): every stream
                # ends, and no new one is taken (subscribe).
                self._end_all()
                return
            try:
                reloads = self._broker.revocation_reloads
                page = await run_in_threadpool(
                    self._broker.revocation_feed, self._cursor, self._anchor or None
                )
            except Exception:  # noqa: BLE001 - retried; meanwhile no stream beats
                _log.exception("reading new revocations failed")
                self._behind = True
                await asyncio.sleep(0.2)
                wake.set()
                continue
            self._behind = False
            self._cursor, self._anchor = page.cursor, page.anchor
            if page.restarted or reloads != self._reloads:
                # The database went back in time (the hub's cursor no longer names the
                # store's entry, or this process's index was reloaded for it): numbers
                # are handed out again that streams may have passed. Each is ended; its
                # reader reconnects with its cursor and gets the check
                # (Revoking.revocation_feed).
                self._reloads = reloads
                self._end_all()
            elif page.records:
                self._fan_out(page.records)

    def _end_all(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.drop()
        self._subscriptions.clear()

    def _fan_out(self, records: list[RevocationRecord]) -> None:
        for subscription in list(self._subscriptions):
            for record in records:
                try:
                    subscription.queue.put_nowait(record)
                except asyncio.QueueFull:
                    subscription.drop()
                    self._subscriptions.discard(subscription)
                    break


class _WriteBlocked(Exception):
    pass


class _EventStream(Response):
    """A ``text/event-stream`` response fed by the hub (see the module docstring)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        broker: Broker,
        hub: RevocationHub,
        *,
        cursor: int | None,
        anchor: str | None,
        reader: Claims,
        slot: Slot,
        heartbeat: float,
        write_timeout: float,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no"})
        self._broker = broker
        self._hub = hub
        self._cursor = cursor
        self._anchor = anchor
        self._reader = reader
        self._slot = slot
        # The stream ends with its reader's token: at its ``exp`` by the clock, and at
        # the life it had left when the stream opened by elapsed time, which a clock
        # stepped back does not lengthen.
        self._ends_at = float(reader.exp)
        self._ends_elapsed = broker.elapsed() + (self._ends_at - broker.clock.now())
        self._heartbeat = heartbeat
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The stream's slot is given back however it ends: its reader hangs up or stops
        # reading, its token ends, the hub ends every stream, the server shuts down (the
        # task is cancelled), or anything fails.
        try:
            await self._stream(receive, send)
        finally:
            self._slot.release()

    async def _stream(self, receive: Receive, send: Send) -> None:
        subscription = await self._hub.subscribe()
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()
            subscription.wake.set()

        watcher = asyncio.create_task(watch())

        async def write(chunk: bytes, *, more: bool = True) -> None:
            message = {"type": "http.response.body", "body": chunk, "more_body": more}
            try:
                await asyncio.wait_for(send(message), self._write_timeout)
            except TimeoutError:
                raise _WriteBlocked from None

        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await asyncio.wait_for(send(start), self._write_timeout)
            # Subscribed first, then read: nothing committed in between can be missed, and
            # what comes twice is skipped by seq (once the entry at the backlog's last seq
            # has come from the hub as it was sent: see _follow).
            page = await run_in_threadpool(self._broker.revocation_feed, self._cursor, self._anchor)
            backlog = b"retry: %d\n\n" % RETRY_MILLISECONDS
            backlog += b"".join(_event(r) for r in page.records)
            await write(backlog + _sync_event(page, self._broker.clock.now()))
            unconfirmed = page.anchor if page.cursor > subscription.since else ""
            await self._follow(subscription, disconnected, write, page.cursor, unconfirmed)
            if not disconnected.is_set():
                await write(b"", more=False)
        except (_WriteBlocked, TimeoutError, OSError):
            _log.info("revocation stream dropped: the reader stopped reading")
        finally:
            self._hub.unsubscribe(subscription)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _follow(
        self,
        subscription: _Subscription,
        disconnected: asyncio.Event,
        write: Callable[..., Awaitable[None]],
        last: int,
        unconfirmed: str,
    ) -> None:
        """Send what the hub hands on past ``last``, the backlog's last ``seq``.

        While the hub has not yet read past ``last`` (``unconfirmed``: the fingerprint of
        the entry sent at it), what it hands on at or below ``last`` was in the backlog and
        is skipped, but only once the entry at ``last`` comes from the hub as it was sent:
        another one there, or none before an entry past it, and the database went back in
        time between the two reads; the stream ends, and its reader's cursor gets the
        check when it reconnects.
        """
        broker = self._broker
        clock = broker.clock
        revocations = broker.kernel.revocations
        while not disconnected.is_set() and not subscription.dropped:
            if not broker.serving:
                # Its tenant is no longer served here (the hub ends every stream as well;
                # this covers one that subscribed as it stopped).
                _log.info("revocation stream ended: its tenant is no longer served")
                return
            if not broker.revocations_current:
                # This process no longer hears other processes' revocations (its store
                # watch went quiet past revocation_staleness_bound): a keepalive would
                # tell the reader it is current. It reconnects, is refused 503 while this
                # lasts, and fails closed past its own staleness bound.
                _log.info("revocation stream ended: revocation state not confirmed current")
                return
            remaining = min(self._ends_at - clock.now(), self._ends_elapsed - broker.elapsed())
            if remaining <= 0:
                return  # the reader's token expired: it reconnects with a fresh one
            if revocations.match(self._reader) is not None:
                # Revoked since it connected (its operator removed, its app deleted): it
                # hears nothing more, as its next request would be refused.
                _log.info("revocation stream ended: the reader's token was revoked")
                return
            getter = asyncio.ensure_future(subscription.queue.get())
            # Woken by a hang-up or by the hub dropping the stream.
            stop = asyncio.ensure_future(subscription.wake.wait())
            await asyncio.wait(
                {getter, stop},
                timeout=min(self._heartbeat, remaining),
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop.cancel()
            if not getter.done():
                getter.cancel()
                if self._hub.behind:
                    # Revocations this process enforces could not be read from the store
                    # to be sent: a keepalive would tell the reader it holds them. It
                    # reconnects, is refused while the reads fail, and fails closed past
                    # its own staleness bound.
                    _log.info("revocation stream ended: new revocations could not be read")
                    return
                if not disconnected.is_set() and not subscription.dropped:
                    await write(_KEEPALIVE)
                continue
            batch = [getter.result()]
            while not subscription.queue.empty():
                batch.append(subscription.queue.get_nowait())
            if unconfirmed:
                at = next((r for r in batch if r.seq >= last), None)
                if at is not None:
                    if at.seq != last or fingerprint(at) != unconfirmed:
                        _log.info("revocation stream ended: the store's history changed")
                        return
                    unconfirmed = ""
            fresh = [r for r in batch if r.seq > last]
            if fresh and revocations.match(self._reader) is not None:
                return  # the batch may be the reader's own revocation: not sent
            if fresh:
                last = max(r.seq for r in fresh)
                now = clock.now()
                await write(b"".join(_event(r, now) for r in fresh))


def revocation_routes(
    broker: Broker,
    hub: RevocationHub,
    *,
    guard: Callable[[Handler], Handler],
    context: Callable[[Request], RequestContext],
    heartbeat: float = HEARTBEAT_SECONDS,
    write_timeout: float = WRITE_TIMEOUT,
) -> list[Route]:
    """The two feed routes, wrapped in the application's problem ``guard``."""

    async def reader(request: Request, ctx: RequestContext) -> Claims:
        """Authenticate the caller: its token's claims."""
        header = request.headers.get("authorization")
        return await run_in_threadpool(broker.authenticate_feed_reader, header, ctx)

    async def snapshot(request: Request) -> Response:
        cursor, anchor = parse_cursor(request.query_params.get("cursor"))
        await reader(request, context(request))
        page = await run_in_threadpool(broker.revocation_feed, cursor, anchor)
        body = wire.RevocationList(
            revocations=[wire.revocation_entry(r) for r in page.records],
            cursor=page.cursor,
            next_cursor=page.next_cursor,
            server_time=broker.clock.now(),
        )
        return Response(_encoder.encode(body) + b"\n", media_type="application/json")

    async def stream(request: Request) -> Response:
        cursor, anchor = parse_cursor(
            request.query_params.get("cursor") or request.headers.get("last-event-id")
        )
        ctx = context(request)
        claims = await reader(request, ctx)
        # Refused (429, audited) when the reader or the process holds its cap of streams.
        slot = await broker.open_feed_stream(claims, ctx)
        try:
            # Handed to the response, which releases it when the stream ends: Starlette
            # calls the response as soon as this returns, with no await in between.
            return _EventStream(
                broker,
                hub,
                cursor=cursor,
                anchor=anchor,
                reader=claims,
                slot=slot,
                heartbeat=heartbeat,
                write_timeout=write_timeout,
            )
        except BaseException:
            slot.release()
            raise

    return [
        Route("/v1/revocations", guard(snapshot), methods=["GET"]),
        Route("/v1/revocations/stream", guard(stream), methods=["GET"]),
    ]
