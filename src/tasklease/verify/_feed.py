"""Following the broker's revocation stream (``GET /v1/revocations/stream``).

:class:`EventParser` is sans-IO (lines in, events out, per the WHATWG server-sent events
format). :class:`FeedFollower` is a daemon thread that reads the stream with httpx,
applies entries to the local index, remembers the cursor and reconnects with it, and
records when it last heard from a broker it knows to be current. The cursor it sends back
is the ``id:`` of the last event read: the broker's anchored cursor (a ``seq`` and the
fingerprint of the entry at it), which lets a broker whose database went back in time
see that the reader's history is no longer its own and answer with a snapshot.

When to try again (:func:`retry_delay`, docs/decisions.md 148):

- a dropped connection, a broker not answering, a stream that ended: at once, then every
  50 to 250 ms (jittered), so a broker back from an outage is followed again within a
  fraction of a second;
- an error answer (any status, the sign-in's too): after a backoff, 0.25 s doubled on
  each error in a row up to :data:`MAX_ERROR_BACKOFF`, and no sooner than a 429's or a
  503's ``Retry-After`` (at most :data:`MAX_RETRY_AFTER`), jittered up to 20% later: each
  refused attempt is an audited refusal at the broker, and the broker said when to
  come back;
- but never so late that the verifier's staleness bound (``max_feed_staleness``) is
  passed when an attempt just before it could have kept it: while the feed is still
  within its bound, a wait ends :data:`RECONNECT_MARGIN` before it (not sooner than
  :data:`MAX_RECONNECT_BACKOFF` from now). A stream refused for its reader's cap may be
  served a moment later (a slot comes free when any stream ends), and that one attempt
  is the difference between failing closed and not. Past the bound (or before the first
  sync) the verifier fails closed anyway, and an attempt before ``Retry-After`` would
  only be refused again, and audited.

A thread rather than an asyncio task: it keeps the feed fresh whatever the application's
event loop is doing, and serves sync and async applications alike.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from tasklease import forksafe
from tasklease.bounds import NO_DEADLINE, bounded_lines, retry_after_seconds
from tasklease.verify._freshness import DEFAULT_MAX_STALENESS
from tasklease.verify._revocations import RevocationIndex, parse_entry

__all__ = [
    "AppCredentials",
    "Event",
    "EventParser",
    "FeedFollower",
    "retry_after_seconds",
    "retry_delay",
]

_log = logging.getLogger("tasklease.verify")
_MAX_EVENT_BYTES = 65536
FIRST_RECONNECT_BACKOFF = 0.05
"""Wait before reaching the stream again after a dropped connection."""
MAX_RECONNECT_BACKOFF = 0.25
"""Longest wait between two attempts to reach the stream after dropped connections."""
FIRST_ERROR_BACKOFF = 0.25
"""Wait after the first error answer in a row (a 401's token is forgotten: a new one
is fetched at once), doubled on each one after."""
MAX_ERROR_BACKOFF = 30.0
"""Longest backoff after error answers in a row."""
MAX_RETRY_AFTER = 60.0
"""Longest ``Retry-After`` honoured: a broker (or a proxy before it) asking for more is
tried again after this, lest one answer keep a verifier failing closed for hours."""
RETRY_JITTER = 0.2
"""A wait after an error answer is made up to this fraction longer, at random."""
RECONNECT_MARGIN = 1.0
"""How long before its staleness bound a verifier still within it tries again at the
latest (half the bound, when that is smaller): time to connect and hear ``sync``."""
_RETRIED = frozenset({429, 503})
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


def retry_delay(
    *,
    failures: int,
    retry_after: float | None,
    staleness: float,
    max_staleness: float,
    jitter: float,
) -> float:
    """Seconds to wait after the ``failures``-th error answer in a row (1 for the first),
    ``retry_after`` the seconds its ``Retry-After`` asked for, if any; ``staleness`` is
    the feed's now and ``jitter`` a random number in [0, 1) (module docstring)."""
    backoff = min(MAX_ERROR_BACKOFF, FIRST_ERROR_BACKOFF * 2.0 ** max(0, failures - 1))
    wait = backoff
    if retry_after is not None and math.isfinite(retry_after):
        wait = max(wait, min(max(0.0, retry_after), MAX_RETRY_AFTER))
    wait *= 1.0 + RETRY_JITTER * jitter
    # Still within the bound: one more attempt before it is passed, whatever was asked.
    left = max_staleness - staleness - min(RECONNECT_MARGIN, max_staleness / 2)
    if left > 0:
        wait = min(wait, max(left, MAX_RECONNECT_BACKOFF))
    return wait


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
        max_staleness: float = DEFAULT_MAX_STALENESS,
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
        self._max_staleness = max_staleness
        # Error answers in a row (reset once the broker serves a stream).
        self.failures = 0
        self._start_lock = threading.Lock()
        # Set in a forked child whose copy was following the feed (forksafe): its thread
        # did not come along, and is started again at the feed's next use.
        self._forked = False
        forksafe.track(self)

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tasklease-revocation-feed", daemon=True
                )
                self._thread.start()

    def _after_fork_in_child(self) -> None:
        """In a forked child (forksafe, its locks and events unheld already): the thread
        that followed the stream is the parent's, and so is the stream. The copy keeps the
        revocations and the cursor it holds, and when it last heard from the broker (its
        staleness goes on growing from there: that is how current this index is); it is
        no longer connected, and follows the feed again, from that cursor, at its next use
        (:meth:`staleness`, which every verification asks)."""
        self.connected = False
        if self._thread is not None:
            self._thread = None
            self._forked = not self._stop.is_set()  # a closed verifier stays closed

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def staleness(self) -> float:
        """Seconds since the feed last proved current (infinite before the first sync)."""
        if self._forked:
            self._resume_after_fork()
        return self._monotonic() - self.last_heard

    def _resume_after_fork(self) -> None:
        with self._start_lock:
            if not self._forked:
                return  # another thread started it
            self._forked = False
        self.start()

    def live(self, within: float) -> bool:
        """True while a synced stream is connected and was heard from within ``within`` s."""
        return self.connected and self.staleness() <= within

    def _run(self) -> None:
        backoff = FIRST_RECONNECT_BACKOFF
        while not self._stop.is_set():
            served = self.connections
            error: Exception | None = None
            try:
                self._follow_once()
                backoff = FIRST_RECONNECT_BACKOFF
            except Exception as exc:  # noqa: BLE001 - reconnect whatever went wrong
                error = exc
            finally:
                self.connected = False
            if self.connections != served:
                self.failures = 0  # the broker served a stream: errors in a row start again
            self._housekeeping()
            if error is None or isinstance(error, httpx.TransportError):
                # A dropped connection (or none): jittered, so that verifiers that lost
                # the broker together do not all come back in the same instant; capped
                # low, so that a broker back from an outage is followed again (and its
                # revocations enforced) within a fraction of a second.
                if error is not None:
                    _log.info("revocation feed disconnected: %s", error)
                delay = backoff * (0.5 + _jitter.random() / 2)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                delay = self._after_error(error)
            self._stop.wait(delay)

    def _after_error(self, error: Exception) -> float:
        """How long to wait after an error answer (or another failure): backoff, and the
        broker's ``Retry-After``, within the staleness bound (:func:`retry_delay`)."""
        self.failures += 1
        retry_after = None
        if isinstance(error, httpx.HTTPStatusError):
            response = error.response
            if response.status_code in _RETRIED:
                retry_after = retry_after_seconds(
                    response.headers.get("retry-after"), now=time.time()
                )
            reason = f"{response.status_code} from {response.request.url.path}"
        else:
            reason = f"{type(error).__name__}: {error}"
        delay = retry_delay(
            failures=self.failures,
            retry_after=retry_after,
            staleness=self.staleness(),
            max_staleness=self._max_staleness,
            jitter=_jitter.random(),
        )
        _log.info("revocation feed refused (%s): trying again in %.2f s", reason, delay)
        return delay

    def _follow_once(self) -> None:
        params = {} if self.resume is None else {"cursor": self.resume}
        headers = {
            "Authorization": f"Bearer {self._token_source()}",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
        }
        timeout = httpx.Timeout(self._read_timeout, read=self._read_timeout)
        # A stream never ends by design (its keepalives prove it alive): no total deadline.
        with self._client.stream(
            "GET",
            "/v1/revocations/stream",
            params=params,
            headers=headers,
            timeout=timeout,
            extensions={NO_DEADLINE: True},
        ) as response:
            if response.status_code == 401:
                self._forget_token()
            response.raise_for_status()
            self.connections += 1
            parser = EventParser()
            synced = False
            for line in bounded_lines(response, _MAX_EVENT_BYTES):
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
