"""How many revocation streams each reader holds in a process, and the process in all
(docs/decisions.md 140).

A stream (``GET /v1/revocations/stream``) holds a connection, a file descriptor, a queue
and a share of every revocation's fan-out for as long as its reader keeps it open, and
any credential that may read the feed could open thousands. So a reader (the principal
its token names: an app, a named operator, the admin; of one tenant) holds at most
``feed_streams_per_reader`` streams at once in a process, and a process serves at most
``feed_streams_per_process``, every tenant's together.

- :class:`StreamSlots` is the bookkeeping, with no I/O: a stream takes a :class:`Slot`
  before it starts and gives it back, once, however it ends (:meth:`Slot.release` may be
  called again: the count never goes below what is held). One serves every tenant of a
  process.
- :class:`FeedStreams` takes a slot for a reader, or refuses it as every refusal is
  refused: ``rate_limited`` with ``Retry-After`` and a ``denial_id`` naming one
  ``feed_stream_denied`` audit event (which, like every audited refusal, spends one of
  the client's budget of refusals: ``core.refusalbudget``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import RateLimited
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.tokens import KIND_APP, Claims

__all__ = ["RETRY_AFTER", "FeedStreams", "Full", "Slot", "StreamSlots", "reader_of"]

RETRY_AFTER = 5
"""The ``Retry-After`` of a refused stream, in seconds: a slot comes free when another
stream ends, which nothing predicts; a reader polls no faster than this."""

Reader = tuple[str, str]
"""A reader: its token's issuer (the tenant's) and subject."""


def reader_of(claims: Claims) -> Reader:
    """The reader a stream counts for: the principal ``claims`` name (``app:<id>``,
    ``operator:<name>``, ``admin``) in its tenant, so that every token it signs in for
    shares its streams."""
    return (claims.iss, claims.sub)


@dataclass(frozen=True, slots=True)
class Full:
    """Why a stream may not start: the cap it would pass (``"reader"`` or
    ``"process"``), that cap, and the streams the reader and the process hold."""

    cap: str
    limit: int
    held: int
    total: int


class Slot:
    """One stream's place in its :class:`StreamSlots`; :meth:`release` gives it back."""

    __slots__ = ("_owner", "_released", "reader")

    def __init__(self, owner: StreamSlots, reader: Reader) -> None:
        self._owner = owner
        self.reader = reader
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the slot back; only the first call counts."""
        self._owner.give_back(self)


class StreamSlots:
    """The streams each reader holds in this process, within ``per_reader``, and all of
    them, within ``per_process``. Thread-safe; no I/O.

    ``observe`` is told the process's new total under the lock, on every change (a gauge).
    """

    def __init__(
        self,
        per_reader: int,
        per_process: int,
        *,
        observe: Callable[[int], object] | None = None,
    ) -> None:
        if per_reader < 1 or per_process < 1:
            raise ValueError("stream caps must be at least 1")
        self.per_reader = per_reader
        self.per_process = per_process
        self._observe = observe
        self._held: dict[Reader, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """The streams the process holds. (Not ``__len__``: a table with none open
        would be falsy, and ``slots or StreamSlots(...)`` would make a second one.)"""
        return self._total

    def held(self, reader: Reader) -> int:
        """The streams ``reader`` holds."""
        return self._held.get(reader, 0)

    def take(self, reader: Reader) -> Slot | Full:
        """A slot for one more stream of ``reader``, or the :class:`Full` cap it would
        pass (the reader's own first: it is the one it can do something about)."""
        with self._lock:
            held = self._held.get(reader, 0)
            if held >= self.per_reader:
                return Full("reader", self.per_reader, held, self._total)
            if self._total >= self.per_process:
                return Full("process", self.per_process, held, self._total)
            self._held[reader] = held + 1
            self._total += 1
            self._changed()
            return Slot(self, reader)

    def give_back(self, slot: Slot) -> None:
        """:meth:`Slot.release`: the slot's stream has ended (again: nothing)."""
        with self._lock:
            # The slot's flag is changed under this lock only.
            if slot._released:
                return
            slot._released = True
            held = self._held[slot.reader] - 1
            if held:
                self._held[slot.reader] = held
            else:
                # Forgotten at zero: the table holds the readers of open streams only.
                del self._held[slot.reader]
            self._total -= 1
            self._changed()

    def _changed(self) -> None:
        if self._observe is not None:
            self._observe(self._total)


_SETTING = {"reader": "feed_streams_per_reader", "process": "feed_streams_per_process"}
_DETAIL = {
    "reader": "too many revocation streams open for this reader",
    "process": "this broker serves as many revocation streams as it may",
}


class FeedStreams(Service):
    """Slots for the revocation streams of one tenant's readers, in the process's
    :class:`StreamSlots` (module docstring)."""

    def __init__(self, kernel: Kernel, slots: StreamSlots) -> None:
        super().__init__(kernel)
        self.slots = slots

    async def open(self, reader: Claims, ctx: RequestContext) -> Slot:
        """A slot for a stream of ``reader`` (authenticated), to be released when the
        stream ends, however it ends.

        Raises:
            RateLimited: the reader holds ``feed_streams_per_reader`` streams in this
                process, or the process ``feed_streams_per_process``; audited
                (``feed_stream_denied``), with its ``denial_id`` and ``Retry-After``.
            Unavailable: that refusal's audit event could not be written.
        """
        taken = self.slots.take(reader_of(reader))
        if isinstance(taken, Slot):
            return taken
        error = RateLimited(
            _DETAIL[taken.cap],
            reason=f"{taken.cap} cap of revocation streams",
            retry_after=RETRY_AFTER,
            hint="close a stream no longer read, or wait Retry-After seconds; "
            "the denial_id names the audit event",
        )
        entry = AuditEntry(
            "feed_stream_denied",
            outcome="denied",
            agent_id=reader.sub,
            app_id=reader.sub.removeprefix("app:") if reader.kind == KIND_APP else "",
            request_id=ctx.request_id,
            detail=(
                f"revocation stream of {reader.sub} refused: it holds {taken.held} in this "
                f"process, the process {taken.total}; {_SETTING[taken.cap]} is {taken.limit}"
            ),
        )
        denied = await self._kernel.adeny(error, entry)
        self._metrics.rate_limited.labels(ctx.route).inc()
        raise denied
