"""Following the broker's revocation stream (``GET /v1/revocations/stream``).

:class:`EventParser` is sans-IO (lines in, events out, per the WHATWG server-sent events
format). :class:`FeedFollower` is a daemon thread that reads the stream with httpx,
applies entries to the local index, remembers the cursor and reconnects with it, and
records when it last heard from a broker it knows to be current. The cursor it sends back
is the ``id:`` of the last event read: the broker's anchored cursor (a ``seq`` and the
fingerprint of the entry at it), which lets a broker whose database went back in time
see that the reader's history is no longer its own and answer with a snapshot.

A thread rather than an asyncio task: it keeps the feed fresh whatever the application's
event loop is doing, and serves sync and async applications alike.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from tasklease.verify._revocations import RevocationIndex, parse_entry

__all__ = ["AppCredentials", "Event", "EventParser", "FeedFollower"]

_log = logging.getLogger("tasklease.verify")
_MAX_EVENT_BYTES = 65536
MAX_RECONNECT_BACKOFF = 0.25
"""Longest wait between two attempts to reach the stream (the first waits 50 ms)."""
# Jitter from a generator of our own: the global one belongs to the application (and to
# tests that seed it), which a background thread must not disturb.
_jitter = random.Random()  # noqa: S311 - jitter, not a secret


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """An app's client credentials: the verifier authenticates to the feed with them."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"AppCredentials(client_id={self.client_id!r}, client_secret=...)"


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "" for a comment (keepalive)
    data: str = ""
    id: str = ""


class EventParser:
    """Server-sent events, one line at a time (no line terminators)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._id = ""

    def feed(self, line: str) -> Iterator[Event]:
        if not line:
            if self._data:
                yield Event(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._size = "", [], 0
            return
        if line.startswith(":"):
            yield Event("")
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value)
            if self._size > _MAX_EVENT_BYTES:
                raise ValueError("event too large")
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value


def _cursor_id(ident: str, seq: int) -> str:
    """The cursor to send back after an event: its ``id:`` when that names ``seq`` (the
    anchored ``<seq>.<fingerprint>``, opaque here), else the bare ``seq``."""
    head, _, _ = ident.partition(".")
    return ident if head == str(seq) else str(seq)


class FeedFollower:
    """Keeps a :class:`RevocationIndex` current from the broker's stream, in a thread."""

    def __init__(
        self,
        client: httpx.Client,
        index: RevocationIndex,
        *,
        token_source: Callable[[], str],
        forget_token: Callable[[], None],
        read_timeout: float,
        on_revocation: Callable[[], None],
        housekeeping: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
        max_backoff: float = MAX_RECONNECT_BACKOFF,
    ) -> None:
        self._client = client
        self._index = index
        self._token_source = token_source
        self._forget_token = forget_token
        self._read_timeout = read_timeout
        self._on_revocation = on_revocation
        self._housekeeping = housekeeping
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        # The last entry's seq (for status), and the cursor sent back: the id of the last
        # event read (a bare seq from a broker that gives no anchored cursors).
        self.cursor: int | None = None
        self.resume: str | None = None
        self.last_heard = -float("inf")
        self.connections = 0
        # True from a stream's ``sync`` until it ends (a read timeout ends it too).
        self.connected = False
        self._max_backoff = max_backoff

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tasklease-revocation-feed", daemon=True
            )
            self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def staleness(self) -> float:
        """Seconds since the feed last proved current (infinite before the first sync)."""
        return self._monotonic() - self.last_heard

    def live(self, within: float) -> bool:
        """True while a synced stream is connected and was heard from within ``within`` s."""
        return self.connected and self.staleness() <= within

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._follow_once()
                backoff = 0.05
            except Exception as exc:  # noqa: BLE001 - reconnect whatever went wrong
                _log.info("revocation feed disconnected: %s", exc)
            finally:
                self.connected = False
            self._housekeeping()
            # Jittered, so that verifiers that lost the broker together do not all come
            # back in the same instant; capped low, so that a broker back from an outage
            # is followed again (and its revocations enforced) within a fraction of a second.
            self._stop.wait(backoff * (0.5 + _jitter.random() / 2))
            backoff = min(backoff * 2, self._max_backoff)

    def _follow_once(self) -> None:
        params = {} if self.resume is None else {"cursor": self.resume}
        headers = {
            "Authorization": f"Bearer {self._token_source()}",
            "Accept": "text/event-stream",
        }
        timeout = httpx.Timeout(self._read_timeout, read=self._read_timeout)
        with self._client.stream(
            "GET", "/v1/revocations/stream", params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code == 401:
                self._forget_token()
            response.raise_for_status()
            self.connections += 1
            parser = EventParser()
            synced = False
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                for event in parser.feed(line):
                    if event.kind == "revocation":
                        entry = parse_entry(json.loads(event.data))
                        self._index.apply([entry])
                        # Events come in seq order, a snapshot's too: the last one read
                        # is where this reader is, in the broker's history as it is now.
                        self.cursor = entry.seq
                        self.resume = _cursor_id(event.id, entry.seq)
                        self._on_revocation()
                    elif event.kind == "":  # keepalive: a moment for housekeeping
                        self._housekeeping()
                    elif event.kind == "sync":
                        cursor = json.loads(event.data).get("cursor")
                        if type(cursor) is int:
                            # The broker's word, even below ours: after its database went
                            # back in time it answers a snapshot and a smaller cursor, from
                            # which numbers are handed out again (entries held stay).
                            self.cursor = cursor
                            self.resume = _cursor_id(event.id, cursor)
                        synced = True
                        self.connected = True
                        self._synced.set()
                    if synced:
                        self.last_heard = self._monotonic()
