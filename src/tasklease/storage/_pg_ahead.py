"""The reads of first halves run on an event loop (:mod:`tasklease.core.readahead`),
made on PostgreSQL without blocking the loop: a few asynchronous connections of each
event loop, each read bounded by the store's deadline. A read takes an idle connection
or waits for one given back; connections are opened in the background, one at a time,
up to the pool's size, and a read on a loop with none open yet goes to a thread.

Only the plain case is handled here: a read that fails for any reason but its deadline
makes the first half run in a thread (``InThread``), where the store's synchronous path
retries a dead connection, notes an outage and translates errors as it always has. A
read past its deadline is an outage, as on that path: its socket is shut down, the
outage noted, and ``Unavailable`` is the read's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from tasklease.core.errors import Unavailable
from tasklease.core.readahead import InThread
from tasklease.storage._pg_guard import Limits, Outage, cut_connection

__all__ = ["LoopReads"]

_log = logging.getLogger("tasklease.storage.postgres")  # the store's logger

Conn = psycopg.AsyncConnection[TupleRow]


class _Reader:
    """One event loop's connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: list[Conn] = []
        self.opened = 0  # idle, in use or being opened
        self.connecting = False  # one connection is opened at a time, in the background
        self.tasks: set[asyncio.Task[None]] = set()
        self.waiting: deque[asyncio.Future[Conn | None]] = deque()


class LoopReads:
    """Asynchronous connections for the reads of first halves, ``size`` per event loop
    at most, opened when first needed. Shared by a store and its tenant views."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any], size: int, limits: Limits) -> None:
        self._conninfo = conninfo
        self._kwargs = {"autocommit": True, **kwargs}
        self._size = size
        self._limits = limits
        self._readers: dict[asyncio.AbstractEventLoop, _Reader] = {}
        self._lock = threading.Lock()  # the idle lists, against close() from another thread
        self._closed = False

    async def fetch(self, outage: Outage, query: object) -> Any:
        """The answer to ``query`` (``("one" | "all", sql, params)``)."""
        if not (isinstance(query, tuple) and len(query) == 3):
            raise TypeError("a read ahead is (kind, sql, params)")
        kind: str = query[0]
        sql: str = query[1]
        params: Any = query[2]
        if self._closed or outage.failing:
            raise InThread("the database is not answering")  # the thread path fails fast
        reader = self._reader()
        conn = await self._take(reader)
        cut = False

        def deadline() -> None:
            nonlocal cut
            cut = True
            cut_connection(conn)

        timer = reader.loop.call_later(self._limits.deadline, deadline)
        try:
            cursor = await conn.execute(sql, params)
            rows = await (cursor.fetchone() if kind == "one" else cursor.fetchall())
        except psycopg.Error as exc:
            self._discard(reader, conn)
            if not cut:
                raise InThread(f"read failed: {type(exc).__name__}") from None
            seconds = self._limits.deadline
            outage.fail(f"no answer within {seconds:g}s")
            raise Unavailable(
                f"the database did not answer within {seconds:g}s",
                reason=f"connection cut after {seconds:g}s: {exc}",
                retry_after=1,
            ) from None
        except BaseException:
            self._discard(reader, conn)  # cancelled mid-read: its state is unknown
            raise
        finally:
            timer.cancel()
        self._give_back(reader, conn)
        return rows

    def _reader(self) -> _Reader:
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is None:
            with self._lock:
                for gone in [r for r in self._readers.values() if r.loop.is_closed()]:
                    self._finish(gone)
                    del self._readers[gone.loop]
                reader = self._readers[loop] = _Reader(loop)
        return reader

    async def _take(self, reader: _Reader) -> Conn:
        """An idle connection, or the next one given back (a read takes a millisecond).

        One more is opened in the background, one at a time, while fewer than ``size``
        are. A request never waits for a connection to be made: with none open yet it
        goes to a thread (``InThread``), so a frozen server costs it no more than the
        thread path's own deadline; a connection lost wakes every waiter to a thread."""
        with self._lock:
            if reader.idle:
                return reader.idle.pop()
            grow = not reader.connecting and reader.opened < self._size and not self._closed
            if grow:
                reader.opened += 1
                reader.connecting = True
            established = reader.opened - (1 if reader.connecting else 0)
        if grow:
            task = reader.loop.create_task(self._open(reader))
            reader.tasks.add(task)
            task.add_done_callback(reader.tasks.discard)
        if established == 0:
            raise InThread("no connection open on the loop yet")
        waiter: asyncio.Future[Conn | None] = reader.loop.create_future()
        reader.waiting.append(waiter)
        try:
            async with asyncio.timeout(self._limits.deadline):
                given = await waiter
        except BaseException as exc:
            # Given a connection just as the wait ended (the deadline, a cancelled
            # request): it goes back, or it would be lost to the loop.
            late = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if late is not None:
                self._give_back(reader, late)
            if isinstance(exc, TimeoutError):
                raise InThread("no connection given back on the loop") from None
            raise
        finally:
            if waiter in reader.waiting:
                reader.waiting.remove(waiter)
        if given is None:
            raise InThread("a connection of the loop was lost")
        return given

    async def _open(self, reader: _Reader) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        except (psycopg.Error, OSError) as exc:
            _log.debug("no connection for the event loop's reads: %s", exc)
            with self._lock:
                reader.opened -= 1
            return
        finally:
            reader.connecting = False
        self._give_back(reader, conn)

    def _give_back(self, reader: _Reader, conn: Conn) -> None:
        if not self._closed:
            while reader.waiting:
                waiter = reader.waiting.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
        with self._lock:
            if not self._closed:
                reader.idle.append(conn)
                return
        self._discard(reader, conn)

    def _discard(self, reader: _Reader, conn: Conn) -> None:
        with self._lock:
            reader.opened -= 1
        conn.pgconn.finish()
        while reader.waiting:  # a read failed or was cut: the waiters go to a thread
            waiter = reader.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _finish(self, reader: _Reader) -> None:
        for conn in reader.idle:
            conn.pgconn.finish()
            reader.opened -= 1
        reader.idle.clear()

    def close(self) -> None:
        """Close every idle connection; one in use is closed when its read ends."""
        with self._lock:
            self._closed = True
            for reader in self._readers.values():
                self._finish(reader)
