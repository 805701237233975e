"""The time a verifier judges tokens by: the later of its own clock and the broker's.

A token's ``exp``, ``nbf`` and ``iat`` are the broker's clock's readings. A verifier whose
host clock runs behind the broker's (set back by mistake, or on purpose to make expired
tokens live again) would accept a token the broker has already let die, for as long as
it is behind. So the verifier reads the broker's clock from the ``Date`` header of each
successful JWKS fetch (the answer came over the same connection that vouches for the
keys) and takes it as a lower bound: ``Date`` is the broker's time when it answered,
truncated to the second, so the broker's clock is at least that when the answer arrives,
and at least that plus the monotonic time elapsed since. :class:`BrokerPacedClock` reads
the later of the local clock and that bound: it never runs ahead of the broker's clock,
and a verifier's clock set back no longer lengthens any token. A clock ahead of the
broker's is not corrected (it only shortens tokens); either way the offset is a metric,
and a warning past half of ``clock_skew``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from tasklease.core.clock import Clock

__all__ = ["BrokerPacedClock"]

_log = logging.getLogger("tasklease.verify")
_WARN_EVERY = 3600.0  # seconds between two warnings while the clocks stay apart


class BrokerPacedClock:
    """A :class:`~tasklease.core.clock.Clock`: ``max(local clock, the broker's clock as
    last read)``; :meth:`note` takes a reading from an answer's ``Date`` header."""

    __slots__ = ("_anchor", "_local", "_monotonic", "_warn_after", "_warned_at")

    def __init__(
        self,
        local: Clock,
        *,
        warn_after: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._local = local
        self._monotonic = monotonic
        self._warn_after = warn_after
        # (the broker's time, the monotonic time it was read at); replaced whole, so
        # readers need no lock.
        self._anchor: tuple[float, float] | None = None
        self._warned_at = -float("inf")

    def now(self) -> float:
        local = self._local.now()
        anchor = self._anchor
        if anchor is None:
            return local
        broker = anchor[0] + (self._monotonic() - anchor[1])
        return broker if broker > local else local

    def broker_floor(self) -> float | None:
        """The least the broker's clock reads now, or None before the first reading."""
        anchor = self._anchor
        return None if anchor is None else anchor[0] + (self._monotonic() - anchor[1])

    def offset(self) -> float | None:
        """The local clock minus the broker's, None before the first reading; negative
        when the local clock is behind. Within about a second (the ``Date`` header's
        resolution and the answer's trip): it may overstate a local clock's lead."""
        floor = self.broker_floor()
        return None if floor is None else self._local.now() - floor

    def note(self, date: str | None) -> None:
        """Take the broker's time from a successful answer's ``Date`` header (RFC 9110
        section 6.6.1); a missing or malformed header changes nothing."""
        if not date:
            return
        try:
            stamp = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return
        if stamp.tzinfo is None:  # only the GMT form is an instant
            return
        received = self._monotonic()
        broker = stamp.timestamp()
        self._anchor = (broker, received)
        offset = self._local.now() - broker
        if abs(offset) > self._warn_after and received - self._warned_at >= _WARN_EVERY:
            self._warned_at = received
            # A local clock behind is made up for; one ahead refuses tokens early. This
            # far apart, either way the host's time wants fixing (NTP).
            _log.warning(
                "this host's clock is %.0f s %s the broker's (read from its JWKS answer); "
                "tokens are judged by the later of the two: check NTP",
                abs(offset),
                "ahead of" if offset > 0 else "behind",
            )
