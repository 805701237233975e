"""The safe horizon: how far pruning may take time to have passed, whatever the wall clock says.

Pruning deletes what can no longer matter at a given time: a revocation entry once every
token it could match has expired, a used nonce once the nonce is dead. Against the raw
wall clock, one forward jump (a wrong NTP answer, a virtual machine restored on another
host, an operator's typo) deletes the entries of tokens that are still valid by the true
time; when the clock comes back, those revoked tokens validate again: revocation fails
open. The horizon is a time that has certainly passed: it starts from the horizon last
persisted in the store (from the wall clock on a store that has none) and advances only
by the monotonic clock, which steps of the wall clock do not move. Pruning runs against
``min(wall clock, horizon)``: never ahead of elapsed time, and never ahead of the wall
clock either, since a clock stepped back is the one tokens are then validated by.

The horizon is persisted at every housekeeping tick, so a process restarted while the
clock is wrong continues from it rather than from the wrong clock; processes sharing a
store keep the greatest (each one is a time that had passed when it was written).

The price: nothing advances the horizon while every process is stopped, so after the
broker was down for D seconds pruning runs D behind the wall clock and entries are kept
D longer than they need be (``tasklease_prune_horizon_lag_seconds`` shows by how much).
Keeping an entry longer never admits a token; deleting it early may.

Each tick also compares how far the wall clock moved with how much time elapsed: a
difference larger than :data:`STEP_THRESHOLD` is a step, logged and counted
(``tasklease_clock_steps_total``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tasklease.core.clock import Clock, ElapsedHorizon
from tasklease.core.metrics import Metrics

__all__ = ["STEP_THRESHOLD", "HorizonStore", "SafeHorizon", "Tick"]

_log = logging.getLogger("tasklease.clock")

STEP_THRESHOLD = 5.0
"""Seconds by which the wall clock may move apart from elapsed time between two ticks
before the difference is reported as a step (NTP slews far less than that in a minute)."""


class HorizonStore(Protocol):
    """What the horizon needs of the store (``core.store.Store`` provides it)."""

    def safe_horizon(self) -> float | None: ...

    def raise_safe_horizon(self, horizon: float) -> float: ...


@dataclass(frozen=True, slots=True)
class Tick:
    """One housekeeping tick's reading of the clocks.

    ``point`` is what to prune against; ``lag`` how far the horizon is behind the wall
    clock (0 when it is not); ``step`` how far the wall clock moved beyond (or, negative,
    short of) the time that elapsed since the previous tick.
    """

    wall: float
    point: float
    lag: float
    step: float


class SafeHorizon:
    """A time that has certainly passed, for pruning. Thread-safe; one per broker.

    ``monotonic`` measures elapsed time (``time.monotonic`` in production: steps of the
    wall clock do not move it). Reads the store's persisted horizon once, here.
    """

    def __init__(
        self,
        clock: Clock,
        store: HorizonStore,
        metrics: Metrics,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._store = store
        self._metrics = metrics
        self._monotonic = monotonic
        self._lock = threading.Lock()
        stored = store.safe_horizon()
        self._elapsed = ElapsedHorizon(clock, base=stored, monotonic=monotonic)
        wall, elapsed = clock.now(), monotonic()
        self._last_wall, self._last_elapsed = wall, elapsed
        if stored is not None and wall - stored > STEP_THRESHOLD:
            _log.info(
                "pruning resumes from the safe horizon, %.0f s behind the wall clock "
                "(the time the broker was stopped, or a clock that jumped ahead)",
                wall - stored,
            )

    def now(self) -> float:
        """The time pruning and loading may take as passed: ``min(wall, horizon)``."""
        with self._lock:
            return self._elapsed.now()

    def tick(self) -> Tick:
        """Persist the horizon, report a clock step, and return what to prune against.

        Raises what the store raises (the caller's housekeeping logs it and goes on).
        """
        with self._lock:
            wall, elapsed = self._clock.now(), self._monotonic()
            step = (wall - self._last_wall) - (elapsed - self._last_elapsed)
            since = elapsed - self._last_elapsed
            self._last_wall, self._last_elapsed = wall, elapsed
            horizon = self._elapsed.at(elapsed)
        # Outside the lock: a store write may wait, and now() must not wait for it.
        stored = self._store.raise_safe_horizon(horizon)
        if stored > horizon:
            # Another process sharing the store has seen more time pass: adopt it.
            with self._lock:
                self._elapsed.raise_to(stored, elapsed)
            horizon = stored
        if abs(step) > STEP_THRESHOLD:
            direction = "forward" if step > 0 else "backward"
            self._metrics.clock_steps.labels(direction).inc()
            _log.warning(
                "the wall clock stepped %s by %.1f s within %.1f s of elapsed time: "
                "pruning keeps to the safe horizon (%.0f s behind the wall clock)",
                direction,
                abs(step),
                since,
                max(0.0, wall - horizon),
            )
        return Tick(wall=wall, point=min(wall, horizon), lag=max(0.0, wall - horizon), step=step)
