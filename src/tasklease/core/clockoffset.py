"""This process's clock against the database server's: the drift signal between replicas.

Replicas sharing one PostgreSQL database date tokens, revocations and leases by their own
wall clocks, and the rules tolerate clocks up to ``clock_skew`` apart (``nbf``/``iat``;
revocation entries dated ``clock_skew`` ahead). Nothing showed how far apart they were
until a token was refused as issued in the future. Each housekeeping tick now asks the
database server for its time (one round trip) and sets ``tasklease_clock_offset_seconds``
to this process's clock minus the server's, taken at the middle of the round trip (half
of it bounds the error). Every replica measures against the same server, so two
replicas' offsets differ by how far apart their clocks are. An offset beyond half of
``clock_skew`` is logged as a warning: two replicas that far off in opposite directions
are at the edge of the tolerance. In-memory and SQLite stores have no server clock (every
process reads its host's): nothing is measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tasklease.core.clock import Clock
from tasklease.core.metrics import Metrics

__all__ = ["measure_offset"]

_log = logging.getLogger("tasklease.broker")


def measure_offset(
    clock: Clock, server_time: Callable[[], float | None], metrics: Metrics, skew: float
) -> float | None:
    """This process's clock minus the database server's (seconds), set on the gauge and
    warned about past ``skew / 2``; None when the store has no clock of its own.

    Raises what ``server_time`` raises (the caller's housekeeping logs it and goes on).
    """
    before = clock.now()
    server = server_time()
    after = clock.now()
    if server is None:
        return None
    offset = (before + after) / 2 - server
    metrics.clock_offset.set(offset)
    if abs(offset) > skew / 2:
        _log.warning(
            "this process's clock is %.1f s %s the database server's (measured within "
            "%.3f s): with clock_skew %g s, tokens and revocations dated by replicas that "
            "far apart can be refused or matched late; check NTP on this host",
            abs(offset),
            "ahead of" if offset > 0 else "behind",
            (after - before) / 2,
            skew,
        )
    return offset
