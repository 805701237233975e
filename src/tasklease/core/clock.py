"""Time as a dependency.

The core never calls ``time.time()`` itself: it asks the injected :class:`Clock`.
Tests pass a :class:`ManualClock` and move it; nothing sleeps and nothing patches time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "Clock",
    "ElapsedHorizon",
    "ManualClock",
    "SystemClock",
    "format_rfc3339",
    "format_rfc3339_seconds",
]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (for tests)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        with self._lock:
            self._now = when


class ElapsedHorizon:
    """A time that has certainly passed: ``base`` (by default the wall clock's reading
    when made) advanced by the monotonic time elapsed since, which steps of the wall clock
    do not move. What pruning may take as the present (:meth:`now`): one forward jump of
    the wall clock must not delete what still matters by the true time
    (``core.horizon``, the broker's, persists it; a verifier's lives in memory).
    """

    __slots__ = ("_clock", "_monotonic", "_origin")

    def __init__(
        self,
        clock: Clock,
        *,
        base: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        # (base, monotonic time of base), replaced whole so readers need no lock.
        self._origin = (clock.now() if base is None else base, monotonic())

    def at(self, elapsed: float) -> float:
        """The horizon at monotonic time ``elapsed``."""
        base, base_at = self._origin
        return base + (elapsed - base_at)

    def raise_to(self, horizon: float, elapsed: float) -> None:
        """Take ``horizon`` as passed at monotonic time ``elapsed`` if that is later."""
        if horizon > self.at(elapsed):
            self._origin = (horizon, elapsed)

    def now(self) -> float:
        """``min(wall clock, horizon)``: never ahead of elapsed time, nor of a wall clock
        stepped back (the one tokens are then validated by)."""
        return min(self._clock.now(), self.at(self._monotonic()))


# The last second formatted: every audit event stamps the time, and ``strftime`` was the
# largest part of that. One (key, text) pair, replaced whole, so threads need no lock.
_LAST_SECOND: list[tuple[tuple[int, int, int, int, int, int], str]] = [((0, 0, 0, 0, 0, 0), "")]


def format_rfc3339(ts: float) -> str:
    """RFC 3339 UTC with microseconds, trailing zeros trimmed (``2026-01-02T03:04:05.5Z``)."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    key = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    last_key, base = _LAST_SECOND[0]
    if key != last_key:
        base = dt.strftime("%Y-%m-%dT%H:%M:%S")
        _LAST_SECOND[0] = (key, base)
    if dt.microsecond:
        return f"{base}.{dt.microsecond:06d}".rstrip("0") + "Z"
    return base + "Z"


def format_rfc3339_seconds(ts: float) -> str:
    """RFC 3339 UTC at second precision (``2026-01-02T03:04:05Z``)."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
