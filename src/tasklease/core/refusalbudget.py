"""Each client's budget of audited refusals (docs/decisions.md 138).

Every refusal the broker audits writes one permanent, hash-chained audit event
(``core.kernel.new_denial_id`` names it), and a caller needs no credential to be
refused. So each client (an address; the HTTP layer folds an IPv6 one to its /64) has a
token bucket of ``refusal_burst`` refusals, refilled at ``refusal_rate`` a second, a
:class:`~tasklease.core.clientlimits.ClientLimit` (which the sign-in limits are too):

- a request is served while its client's bucket holds a whole token, and every refusal
  audited while serving it spends one (:meth:`RefusalBudget.charging` names the client,
  :func:`charge_refusal` spends), as does a refusal that writes to the store without
  an audit event (a malformed registration spending its nonce, ``core.registration``);
- once the bucket is empty the client's requests are refused up front, before any work
  (:meth:`RefusalBudget.check`): the first of such a run is audited once, as a
  ``refusals_rate_limited`` event, and every refusal of the run carries that event's
  ``denial_id``: many refusals, one event. That event spends a token too, so a client
  causes at most ``burst + rate * t`` refusal events in ``t`` seconds (plus what
  requests already under way when the bucket ran out refuse), whatever it sends.

The run's event is written through the kernel (``deny``, awaited: fail-closed). The
table is bounded: the clients seen least recently are forgotten first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from typing import NamedTuple

from tasklease.core.auditformat import AuditEntry
from tasklease.core.clientlimits import MAX_CLIENTS, REFUSALS, ClientLimit, Run, Verdict

__all__ = ["MAX_CLIENTS", "RefusalBudget", "Run", "Verdict", "charge_refusal"]


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


class RefusalBudget(ClientLimit):
    """Token buckets of audited refusals by client (module docstring).

    ``monotonic`` reads elapsed seconds (injected: tests drive it by hand); ``deny``
    writes a refusal's audit event under its ``denial_id`` (``Kernel.arecord_denial``)
    and ``new_denial_id`` names a refusal (``core.kernel.new_denial_id``), for
    :meth:`admit`.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        monotonic: Callable[[], float],
        deny: Callable[[AuditEntry, str], Awaitable[object]] | None = None,
        new_denial_id: Callable[[], str] | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        super().__init__(
            rate,
            burst,
            REFUSALS,
            monotonic=monotonic,
            deny=deny,
            new_denial_id=new_denial_id,
            max_clients=max_clients,
        )

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
