"""Following the revocations that other PostgreSQL stores commit: LISTEN on a thread.

A transaction that stores a revocation sends ``pg_notify`` on :data:`NOTIFY_CHANNEL`
with ``"<seq> <commit time> <origin>"`` just before it commits (``PostgresStore.write``);
a :class:`RevocationWatch`, returned by ``PostgresStore.start_watch``, listens for it.
A migration sends ``"schema <version>"`` on the same channel; the watch reads the schema
version then, and at every check-in, for the store's ``SchemaGate``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tasklease.storage._pg_guard import Watchdog
from tasklease.storage._sql import Row

__all__ = ["CHECK_IN", "NOTIFY_CHANNEL", "RevocationWatch"]

NOTIFY_CHANNEL = "tasklease_revocations"
_log = logging.getLogger("tasklease.storage.postgres")  # the store's logger
# The watch's check-in: a round trip that reads the schema version (its own text, so that
# pg_stat_activity tells the LISTEN connection apart).
CHECK_IN = "SELECT COALESCE(MAX(version), 0) AS watched_version FROM schema_version"


class RevocationWatch:
    """A LISTEN connection on a background thread; see :meth:`PostgresStore.start_watch`."""

    def __init__(
        self,
        conninfo: str,
        origin: str,
        on_change: Callable[[float | None], None],
        interval: float,
        *,
        connect_kwargs: dict[str, Any],
        watchdog: Watchdog,
        deadline: float,
        on_schema: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._conninfo = conninfo
        self._on_schema = on_schema
        self._origin = origin
        self._on_change = on_change
        self._interval = interval
        # The store's connection parameters (timeouts, keepalives) and its watchdog: a
        # check-in on a server that froze is cut after ``deadline``, then we reconnect.
        self._connect_kwargs = connect_kwargs
        self._watchdog = watchdog
        self._deadline = deadline
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="tasklease-pg-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _deliver(self, committed_at: float | None) -> None:
        try:
            self._on_change(committed_at)
        except Exception as exc:  # noqa: BLE001 - the watch must outlive a failed refresh
            if not self._failing:
                _log.warning("revocation refresh failed: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, **self._connect_kwargs
                ) as conn:
                    with self._watchdog.bounded(conn, self._deadline):
                        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._check_schema(conn)
                    if self._failing:
                        _log.warning("revocation watch reconnected")
                    backoff = 0.05
                    # Whatever was committed while we were not listening.
                    self._deliver(None)
                    self._listen(conn)
            except psycopg.Error as exc:
                if not self._failing:
                    _log.warning("revocation watch lost its connection: %s", exc)
                self._failing = True
                # The broker is no longer confirmed current; it fails closed once its
                # staleness bound passes without a successful check-in.
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _listen(self, conn: psycopg.Connection[Row]) -> None:
        next_check = time.monotonic() + self._interval
        while not self._stop.is_set():
            wait = max(0.0, min(0.2, next_check - time.monotonic()))
            migrated = False
            for notify in conn.notifies(timeout=wait):
                if notify.payload.startswith("schema "):
                    migrated = True  # read once the generator gives the connection back
                self._deliver(self._commit_time(notify.payload))
            if migrated:
                self._check_schema(conn)
            if time.monotonic() >= next_check:
                # A round trip on the LISTEN connection: every notification committed
                # before it was sent has now been received, so a refresh after it is
                # current as of now. It also proves the connection is alive, and reads
                # the schema version (a migration whose notification we missed).
                self._check_schema(conn)
                self._deliver(None)
                next_check = time.monotonic() + self._interval

    def _check_schema(self, conn: psycopg.Connection[Row]) -> None:
        """Read the schema version and hand it to ``on_schema`` (before any refresh)."""
        with self._watchdog.bounded(conn, self._deadline):
            row = conn.execute(CHECK_IN).fetchone()
        self._on_schema(int(row[0]) if row else 0)

    def _commit_time(self, payload: str) -> float | None:
        """The commit time in a notification payload ``"<seq> <time> <origin>"``.

        None for our own store's notifications (it applied them itself) or a payload we
        cannot read (the refresh still runs).
        """
        parts = payload.split()
        if len(parts) != 3 or parts[2] == self._origin:
            return None
        try:
            return float(parts[1])
        except ValueError:
            return None
