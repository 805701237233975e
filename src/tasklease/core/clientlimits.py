"""Limits by client whose refusals are audited by runs: one audit event for many 429s
(docs/decisions.md 138 and 148).

A client is an address (the HTTP layer folds an IPv6 one to its /64). A
:class:`ClientLimit` gives each client a token bucket, ``burst`` deep and refilled at
``rate`` a second, and its :class:`Limit` says what spends a token:

- the budget of audited refusals (``core.refusalbudget``, :data:`REFUSALS`): every refusal
  audited while serving the client's request spends one; being served spends nothing;
- the sign-in limits (:data:`ADMIN_SIGN_IN`, :data:`APP_SIGN_IN`): every attempt the
  broker serves spends one (``takes``).

Once the bucket holds less than a whole token the client is refused, up front, 429
``rate_limited`` with ``Retry-After``. Every refusal is audited, but a flood must not
write one event per 429: the first refusal of a *run* writes one event (the limit's
``event``, naming the client and the limit) through the kernel (``deny``: awaited,
fail-closed), and every refusal of the run carries that event's ``denial_id``; the run
ends when the client is served again, and the next refusal begins a new run, with a new
event. The run's event spends a token of the bucket that refused (so what a limit lets
through and the events of its runs together stay within ``burst + rate * t`` in ``t``
seconds), and, like every audited refusal, one of the client's budget of refusals.

The bookkeeping holds no I/O and is thread-safe; the table is bounded: the clients seen
least recently are forgotten first.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import RateLimited, Unavailable

__all__ = [
    "ADMIN_SIGN_IN",
    "APP_SIGN_IN",
    "MAX_CLIENTS",
    "REFUSALS",
    "ClientLimit",
    "Limit",
    "Run",
    "Verdict",
]

MAX_CLIENTS = 65_536
"""Most clients a limit remembers (about 200 bytes each)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """What a :class:`ClientLimit` limits, and how its refusals say so.

    ``event`` is the audit event type of a run; its detail reads "client <address> spent
    ``spent`` (<burst> at <rate>/s): ``refused``, under this one event, until it
    refills"; ``message`` is the 429's ``detail``. ``takes``: serving a request takes a
    token (an attempt counts), rather than only the refusals audited while serving it.
    """

    event: str
    spent: str
    refused: str
    message: str
    takes: bool = False


REFUSALS = Limit(
    "refusals_rate_limited",
    "its budget of audited refusals",
    "its requests are refused up front",
    "too many refused requests from this address",
)
ADMIN_SIGN_IN = Limit(
    "admin_auth_rate_limited",
    "the admin sign-in limit",
    "its sign-ins with the admin secret or as an operator (API and console) are refused",
    "too many sign-in attempts from this address",
    takes=True,
)
APP_SIGN_IN = Limit(
    "app_auth_rate_limited",
    "the app sign-in limit",
    "its app sign-ins (POST /v1/app/auth and client credentials at POST /v1/oauth/token) "
    "are refused",
    "too many sign-in attempts from this address",
    takes=True,
)


@dataclass(slots=True)
class Run:
    """A run of refusals of one client: the one event's ``denial_id``, and whether that
    event is durable (``None`` until its writer knows)."""

    denial_id: str
    written: asyncio.Future[bool] | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a client is not served: its run, whether this request begins it (and writes
    its event), and the whole seconds until the bucket holds a token again."""

    run: Run
    first: bool
    retry_after: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    run: Run | None = None


class ClientLimit:
    """Token buckets by client, and the audited runs of refusals (module docstring).

    ``monotonic`` reads elapsed seconds (injected: tests drive it by hand); ``deny``
    writes a refusal's audit event under a ``denial_id`` already named
    (``Kernel.arecord_denial``) and ``new_denial_id`` names one
    (``core.kernel.new_denial_id``), for :meth:`admit`.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        limit: Limit,
        *,
        monotonic: Callable[[], float],
        deny: Callable[[AuditEntry, str], Awaitable[object]] | None = None,
        new_denial_id: Callable[[], str] | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self.max_clients = max_clients
        self._deny = deny
        self._new_denial_id = new_denial_id
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        # The deepest a bucket goes: requests already under way when it ran out may
        # each still spend, and a client must not wait for ever on their account.
        self._floor = -float(burst)

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket_locked(self, client: str) -> _Bucket:
        now = self._monotonic()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.at)  # a clock that steps back refills nothing
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.at = now
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return bucket

    def spend(self, client: str) -> None:
        """One token of ``client`` spent."""
        with self._lock:
            bucket = self._bucket_locked(client)
            bucket.tokens = max(self._floor, bucket.tokens - 1.0)

    def admits(self, client: str) -> bool:
        """Whether ``client`` may be served now (its bucket holds a token; a run of
        refusals ends), without taking a token or naming a refusal: for a caller on the
        path of every request. ``False`` leaves the refusal to :meth:`admit`."""
        with self._lock:
            bucket = self._bucket_locked(client)
            if bucket.tokens >= 1.0:
                bucket.run = None
                return True
            return False

    def check(self, client: str, new_denial_id: Callable[[], str]) -> Verdict | None:
        """``None`` when ``client`` may be served (its bucket holds a token, one of which
        is taken when the limit ``takes``: a run of refusals ends), else the
        :class:`Verdict` to refuse it with. The request that begins a run gets ``first``
        and a fresh ``denial_id`` (``new_denial_id``), and spends a token for the event
        it is to write."""
        with self._lock:
            bucket = self._bucket_locked(client)
            if self._serves(bucket):
                return None
            if bucket.run is not None:
                return Verdict(bucket.run, False, self._retry_after(bucket))
        # Made outside the lock: making one may charge (charge_refusal) and so lock.
        denial_id = new_denial_id()
        with self._lock:
            bucket = self._bucket_locked(client)
            first = bucket.run is None
            if bucket.run is None:
                bucket.run = Run(denial_id)
                bucket.tokens = max(self._floor, bucket.tokens - 1.0)
            return Verdict(bucket.run, first, self._retry_after(bucket))

    def _serves(self, bucket: _Bucket) -> bool:
        """Under the lock: whether ``bucket``'s client is served (a run ends), a token
        taken when the limit ``takes``."""
        if bucket.tokens < 1.0:
            return False
        bucket.run = None
        if self.limit.takes:
            bucket.tokens -= 1.0
        return True

    def _retry_after(self, bucket: _Bucket) -> int:
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def forget_run(self, client: str, run: Run) -> None:
        """``run``'s event could not be written: the next refusal begins a new run."""
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is not None and bucket.run is run:
                bucket.run = None

    async def admit(self, client: str, *, request_id: str = "") -> RateLimited | None:
        """``None`` when ``client`` may be served (a token taken when the limit
        ``takes``), else the ``rate_limited`` refusal to answer it with, up front.

        The first refusal of a run writes the run's one audit event (awaited: if it
        cannot be written, :class:`Unavailable`, and the next refusal begins the run
        again); every refusal of the run carries its ``denial_id`` and is answered only
        once that event is durable.
        """
        if self._deny is None or self._new_denial_id is None:
            raise TypeError("admit needs deny and new_denial_id")
        verdict = self.check(client, self._new_denial_id)
        if verdict is None:
            return None
        run = verdict.run
        limit = self.limit
        if verdict.first:
            written = run.written = asyncio.get_running_loop().create_future()
            entry = AuditEntry(
                limit.event,
                outcome="denied",
                request_id=request_id,
                detail=(
                    f"client {client} spent {limit.spent} ({self.burst} at {self.rate:g}/s): "
                    f"{limit.refused}, under this one event, until it refills"
                ),
            )
            try:
                await self._deny(entry, run.denial_id)
                written.set_result(True)
            finally:
                if not written.done():
                    self.forget_run(client, run)
                    written.set_result(False)
        elif run.written is not None and not await asyncio.shield(run.written):
            raise Unavailable("the refusal could not be audited")
        refused = RateLimited(
            limit.message,
            retry_after=verdict.retry_after,
            hint="wait Retry-After seconds; the denial_id names the audit event",
        )
        refused.denial_id = run.denial_id
        return refused
