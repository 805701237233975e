"""Bounds on every call to PostgreSQL, so that a database that stops answering costs a
caller seconds, not forever.

* :class:`Limits`: what a connection is opened with. Server-side ``statement_timeout``,
  ``lock_timeout`` and ``idle_in_transaction_session_timeout`` (the last frees the locks of
  a replica frozen in a transaction); TCP keepalives and ``tcp_user_timeout``, so a peer
  that vanished from the network is noticed by the kernel; ``connect_timeout``.
* :class:`Watchdog`: a server that is frozen (stopped, swapped out, its host hung) enforces
  none of its own timeouts, and the kernel still acknowledges what we send it, so nothing
  on the wire ever fails. The watchdog shuts down the socket of a call that outlives its
  deadline; the driver then fails at once, as if the server had hung up.
* :class:`Outage`: after the database stopped answering, every call fails at once for a
  short pause instead of each waiting out its own deadline; the first call after the
  pause is a trial with a short deadline.

Nothing here imports the store: ``postgres.py`` and ``_pg_watch.py`` use it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tasklease.core.errors import Unavailable

__all__ = [
    "OUTAGE_PAUSE",
    "TRIAL_DEADLINE",
    "Limits",
    "Outage",
    "Timer",
    "Watchdog",
    "cut_connection",
    "parse_conninfo",
]


def parse_conninfo(conninfo: str) -> dict[str, Any]:
    """libpq's reading of a PostgreSQL URL (or connection string), as the store connects
    by it.

    Raises:
        ValueError: libpq cannot parse it; the message does not quote it: libpq's own
            quotes the part it could not read, which may be the password, and a URL libpq
            does not read is no URL whose password a redaction surely finds.
    """
    try:
        return dict(conninfo_to_dict(conninfo))
    except psycopg.ProgrammingError:
        raise ValueError(
            "libpq cannot parse the PostgreSQL URL (check its percent-encoding, brackets "
            "and query parameters, which must be libpq's own); it is not shown here: it "
            "may hold a password"
        ) from None


_log = logging.getLogger("tasklease.storage.postgres")  # the store's logger

OUTAGE_PAUSE = 1.0
"""Seconds every call fails at once after the database stopped answering."""

TRIAL_DEADLINE = 1.0
"""The deadline (and the longest wait for a pooled connection) of calls made while the
database is known not to answer: a server that is back answers in milliseconds."""

# The client-side deadline is the server's statement timeout and this much more, so a
# live server's own, clearer error (statement or lock timeout) normally comes first.
_DEADLINE_MARGIN = 0.5


@dataclass(frozen=True, slots=True)
class Limits:
    """How long PostgreSQL may take, in seconds (see ``docs/configuration.md``).

    ``statement_timeout`` bounds one statement on the server; the client cuts a call
    ``0.5`` s after it (:attr:`deadline`), whatever the server does. ``tcp_timeout`` is how
    long an unanswered TCP connection lives: keepalive probes start after half of it,
    and ``tcp_user_timeout`` drops a connection whose data goes unacknowledged that long.
    """

    statement_timeout: float = 5.0
    lock_timeout: float = 3.0
    connect_timeout: float = 3.0
    pool_timeout: float = 3.0
    tcp_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("statement_timeout", "lock_timeout", "connect_timeout", "pool_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be between 0 and 3600 seconds")
        if not 1 <= self.tcp_timeout <= 3600:
            raise ValueError("tcp_timeout must be between 1 and 3600 seconds")

    @property
    def deadline(self) -> float:
        """Seconds after which the client gives up on a call (a statement, a transaction)."""
        return self.statement_timeout + _DEADLINE_MARGIN

    def connect_kwargs(self, conninfo: str) -> dict[str, Any]:
        """libpq parameters to connect with; what ``conninfo`` sets itself wins.

        The server-side timeouts travel in ``options`` (no round trip of their own) ahead
        of any ``options`` of the URL, so ``-c`` settings the operator wrote take effect;
        ``synchronous_commit = on`` after them, unless they ask for as much or more
        (:func:`_durable_commits`).

        Raise ``ValueError`` for a URL libpq cannot parse (:func:`parse_conninfo`).
        """
        given = parse_conninfo(conninfo)
        idle_in_transaction = 2 * self.statement_timeout
        ours = " ".join(
            f"-c {name}={_milliseconds(seconds)}"
            for name, seconds in (
                ("statement_timeout", self.statement_timeout),
                ("lock_timeout", self.lock_timeout),
                ("idle_in_transaction_session_timeout", idle_in_transaction),
            )
        )
        theirs = str(given.get("options") or "")
        kwargs: dict[str, Any] = {
            "options": " ".join(part for part in (ours, theirs, _durable_commits(theirs)) if part),
            # libpq counts whole seconds and treats less than 2 as 2.
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
            "keepalives": 1,
            "keepalives_idle": max(1, round(self.tcp_timeout / 2)),
            "keepalives_interval": max(1, round(self.tcp_timeout / 6)),
            "keepalives_count": 3,
            "tcp_user_timeout": _milliseconds(self.tcp_timeout),
        }
        for name in list(kwargs):
            if name != "options" and name in given:
                del kwargs[name]
        return kwargs


# ``synchronous_commit`` set in a URL's options (``-c name=value``, ``-cname=value``,
# ``--name=value``; PostgreSQL reads ``-`` in a name as ``_``).
_SYNCHRONOUS_COMMIT = re.compile(r"(?:-c\s*|--)synchronous[_-]commit=(\S+)", re.IGNORECASE)
# The values with which a commit returns before its WAL is written (off, and the
# boolean spellings PostgreSQL accepts for it).
_ASYNCHRONOUS = frozenset({"off", "false", "no", "0"})


def _durable_commits(theirs: str) -> str:
    """The option that makes every commit of ours wait for its WAL to be flushed, to be
    put after the URL's own options; "" when those already ask for that or more.

    A commit is acknowledged (a revocation answered 200, a token issued with its audit
    event) only once it is durable: with ``synchronous_commit = off`` (a server's default,
    a role's or database's setting, or the URL's), PostgreSQL returns before the WAL is
    written and a crash of the server loses the last commits, acknowledged revocations
    among them. The URL may choose a stronger level (``remote_apply``, ...), never off.
    """
    found = _SYNCHRONOUS_COMMIT.findall(theirs)
    if found and found[-1].strip("'\"").lower() not in _ASYNCHRONOUS:
        return ""
    return "-c synchronous_commit=on"


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# -- the watchdog ------------------------------------------------------------------------


class Timer:
    """One armed call: ``fired`` once the watchdog cut its connection."""

    __slots__ = ("conn", "deadline", "fired", "seconds")

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False


class Watchdog:
    """Cuts the connection of a call that outlives its deadline (one thread, started
    lazily, for every connection of a store)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: set[Timer] = set()
        self._wake_at = math.inf  # when the thread next looks; inf: when told to
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def bounded(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[Timer]:
        """Cut ``conn`` if the block is still running after ``seconds``."""
        timer = Timer(conn, seconds)
        with self._cond:
            self._armed.add(timer)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="tasklease-pg-watchdog", daemon=True
                )
                self._thread.start()
            if timer.deadline < self._wake_at:
                self._cond.notify()
        try:
            yield timer
        finally:
            with self._cond:
                self._armed.discard(timer)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for timer in [t for t in self._armed if t.deadline <= now]:
                    # Cut while holding the lock: the call cannot end (and its connection
                    # go back to the pool, or be closed) until we are done with it.
                    self._armed.discard(timer)
                    timer.fired = True
                    cut_connection(timer.conn)
                self._wake_at = min((t.deadline for t in self._armed), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


def cut_connection(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down, so a call waiting on it fails at once.

    Only shut down, never closed: the file descriptor stays the driver's, and a duplicate
    of it is all we touch.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # already closed
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        _log.debug("could not cut a database connection: %s", exc)


# -- the outage --------------------------------------------------------------------------


class Outage:
    """Whether the database stopped answering, and until when calls fail at once.

    :meth:`fail` is called when a call found the database not answering (its deadline
    passed, its connection died, no connection could be made); :meth:`recover` when a
    call succeeded. Each is logged once per outage.
    """

    def __init__(self, pause: float = OUTAGE_PAUSE) -> None:
        self._pause = pause
        self._until = 0.0
        self._since: float | None = None
        self._reason = ""
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        """True from a failure until the next success."""
        return self._since is not None

    @property
    def reason(self) -> str:
        """Why the last call failed ("" while the database answers)."""
        return self._reason

    def check(self) -> None:
        """Raise ``Unavailable`` during the pause after a failure."""
        if time.monotonic() < self._until:
            raise Unavailable(
                "the database is not answering",
                reason=f"failing fast after: {self._reason}",
                retry_after=1,
            )

    def fail(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._until = now + self._pause
            self._reason = reason
            if self._since is None:
                self._since = now
                _log.error(
                    "PostgreSQL is not answering (%s); calls fail at once for %gs at a time "
                    "until it answers again",
                    reason,
                    self._pause,
                )

    def recover(self) -> None:
        if self._since is None:
            return  # the common case: no lock
        with self._lock:
            if self._since is None:
                return
            _log.warning(
                "PostgreSQL answers again after %.1fs (%s)",
                time.monotonic() - self._since,
                self._reason,
            )
            self._since = None
            self._until = 0.0
            self._reason = ""
