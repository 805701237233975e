"""Each client's budget of audited refusals (docs/decisions.md 138).

Every refusal the broker audits writes one permanent, hash-chained audit event
(``core.kernel.new_denial_id`` names it), and a caller needs no credential to be
refused. So each client (an address; the HTTP layer folds an IPv6 one to its /64) has a
token bucket of ``refusal_burst`` refusals, refilled at ``refusal_rate`` a second:

- a request is served while its client's bucket holds a whole token, and every refusal
  audited while serving it spends one (:meth:`RefusalBudget.charging` names the client,
  :func:`charge_refusal` spends);
- once the bucket is empty the client's requests are refused up front, before any work
  (:meth:`RefusalBudget.check`): the first of such a run is audited once, as a
  ``refusals_rate_limited`` event, and every refusal of the run carries that event's
  ``denial_id``: many refusals, one event. That event spends a token too, so a client
  causes at most ``burst + rate * t`` refusal events in ``t`` seconds (plus what
  requests already under way when the bucket ran out refuse), whatever it sends.

The run's event is written through the kernel (``record``, awaited: fail-closed). The
table is bounded: the clients seen least recently are forgotten first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import NamedTuple

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import RateLimited, Unavailable

__all__ = ["MAX_CLIENTS", "RefusalBudget", "Run", "Verdict", "charge_refusal"]

MAX_CLIENTS = 65_536
"""Most clients a budget remembers (about 200 bytes each)."""


@dataclass(slots=True)
class Run:
    """A run of up-front refusals of one client: the one event's ``denial_id``, and
    whether that event is durable (``None`` until its writer knows)."""

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


class _Charge(NamedTuple):
    budget: RefusalBudget
    client: str


# Set while a client's request is served (RefusalBudget.charging): whom a refusal charges.
_CHARGE: ContextVar[_Charge | None] = ContextVar("tasklease_refusal_charge", default=None)


def charge_refusal() -> None:
    """Spend one token of the client whose request is being served, if any: called once
    for each refusal audited (``core.kernel.new_denial_id``)."""
    charge = _CHARGE.get()
    if charge is not None:
        charge.budget.spend(charge.client)


class RefusalBudget:
    """Token buckets of audited refusals by client (module docstring).

    ``monotonic`` reads elapsed seconds (injected: tests drive it by hand); ``record``
    writes audit entries (``Kernel.arecord``) and ``new_denial_id`` names a refusal
    (``core.kernel.new_denial_id``), for :meth:`admit`.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        monotonic: Callable[[], float],
        record: Callable[[AuditEntry], Awaitable[object]] | None = None,
        new_denial_id: Callable[[], str] | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._record = record
        self._new_denial_id = new_denial_id
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        # The deepest a bucket goes: requests already under way when it ran out may
        # each still refuse, and a client must not wait for ever on their account.
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
        """One refusal of ``client`` audited: one token spent."""
        with self._lock:
            bucket = self._bucket_locked(client)
            bucket.tokens = max(self._floor, bucket.tokens - 1.0)

    def admits(self, client: str) -> bool:
        """Whether ``client`` may be served now (its bucket holds a token; a run of
        refusals ends): :meth:`check`'s answer on the path of every request, without a
        verdict. ``False`` leaves the refusal to :meth:`admit`."""
        with self._lock:
            bucket = self._bucket_locked(client)
            if bucket.tokens >= 1.0:
                bucket.run = None
                return True
            return False

    def check(self, client: str, new_denial_id: Callable[[], str]) -> Verdict | None:
        """``None`` when ``client`` may be served (its bucket holds a token: a run of
        refusals ends), else the :class:`Verdict` to refuse it with. The request that
        begins a run gets ``first`` and a fresh ``denial_id`` (``new_denial_id``), and
        spends a token for the event it is to write."""
        with self._lock:
            bucket = self._bucket_locked(client)
            if bucket.tokens >= 1.0:
                bucket.run = None
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

    def _retry_after(self, bucket: _Bucket) -> int:
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def forget_run(self, client: str, run: Run) -> None:
        """``run``'s event could not be written: the next refusal begins a new run."""
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is not None and bucket.run is run:
                bucket.run = None

    async def admit(self, client: str, *, request_id: str = "") -> RateLimited | None:
        """``None`` when ``client`` may be served, else the ``rate_limited`` refusal to
        answer it with, up front: it has spent its budget.

        The first refusal of a run writes the run's one ``refusals_rate_limited`` event
        (awaited: if it cannot be written, :class:`Unavailable`, and the next refusal
        begins the run again); every refusal of the run carries its ``denial_id`` and
        is answered only once that event is durable.
        """
        if self._record is None or self._new_denial_id is None:
            raise TypeError("admit needs record and new_denial_id")
        verdict = self.check(client, self._new_denial_id)
        if verdict is None:
            return None
        run = verdict.run
        if verdict.first:
            written = run.written = asyncio.get_running_loop().create_future()
            entry = AuditEntry(
                "refusals_rate_limited",
                outcome="denied",
                request_id=request_id,
                detail=(
                    f"client {client} spent its budget of audited refusals "
                    f"({self.burst} at {self.rate:g}/s): its requests are refused up "
                    f"front, under this one event, until it refills | denial={run.denial_id}"
                ),
            )
            try:
                await self._record(entry)
                written.set_result(True)
            finally:
                if not written.done():
                    self.forget_run(client, run)
                    written.set_result(False)
        elif run.written is not None and not await asyncio.shield(run.written):
            raise Unavailable("the refusal could not be audited")
        refused = RateLimited(
            "too many refused requests from this address",
            retry_after=verdict.retry_after,
            hint="wait Retry-After seconds; the denial_id names the audit event",
        )
        refused.denial_id = run.denial_id
        return refused

    @contextlib.contextmanager
    def charging(self, client: str) -> Iterator[None]:
        """While this lasts, refusals audited here (this task, and the threads it hands
        work to, which copy its context) spend ``client``'s tokens."""
        token = self.charge(client)
        try:
            yield
        finally:
            self.uncharge(token)

    def charge(self, client: str) -> Token[_Charge | None]:
        """:meth:`charging` begun (for a caller on the path of every request, where a
        context manager's generator costs): end it with :meth:`uncharge`."""
        return _CHARGE.set(_Charge(self, client))

    @staticmethod
    def uncharge(token: Token[_Charge | None]) -> None:
        """End what :meth:`charge` began."""
        _CHARGE.reset(token)
