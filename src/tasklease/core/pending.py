"""Write operations in two halves: decided and signed without writing, then group-committed.

A service's ``prepare_*`` method checks a request, signs what it issues and builds the
unit that writes it, and writes nothing itself: it returns a :class:`Pending`. Then
:func:`complete` (a thread) or :func:`acomplete` (a coroutine, holding no thread while it
waits) commits the unit through the group commit and runs what follows a durable write
(the revocation index, metrics, the answer). Refusals audited by the first half go
through :meth:`~tasklease.core.kernel.Kernel.deny` as always; run inside
:func:`~tasklease.core.audit.deferring` (the HTTP adapter does, on its event loop), their
events are written by :func:`asettle` before the refusal is answered.

Nothing is answered before it is durable: the answer comes from ``done``, which runs only
after the commit returned, and a commit that fails raises (``Unavailable``) instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from tasklease.core.audit import Deferred, Guard
from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import Forbidden, Unauthorized
from tasklease.core.kernel import Kernel
from tasklease.core.store import WriteTx

__all__ = ["Lost", "Pending", "aanswer", "acomplete", "asettle", "complete"]

T = TypeVar("T")
Unit = Callable[[WriteTx], Sequence[AuditEntry]]
Lost = Unauthorized | Forbidden  # what a unit raises when it loses a race


@dataclass(frozen=True, slots=True)
class Pending(Generic[T]):
    """An operation decided and not yet written.

    ``unit`` writes its state and returns its audit entries (None: nothing to write);
    ``done`` runs once the unit is durable and gives the answer. ``refused`` names the
    denial entry for an :class:`Unauthorized` or :class:`Forbidden` the unit raised (a
    race lost in the transaction: the token renewed meanwhile, the nonce spent, the agent
    swept); it gets a ``denial_id`` and one audit event like every refusal. Without it
    such an error is raised as is.
    """

    unit: Unit | None
    done: Callable[[], T]
    refused: Callable[[Lost], AuditEntry] | None = None


def complete(kernel: Kernel, pending: Pending[T]) -> T:
    """Commit ``pending`` in this thread (waiting for the group commit), then answer."""
    if pending.unit is not None:
        try:
            kernel.commit(pending.unit)
        except (Unauthorized, Forbidden) as exc:
            if pending.refused is None:
                raise
            raise kernel.deny(exc, pending.refused(exc)) from None
    return pending.done()


async def acomplete(kernel: Kernel, pending: Pending[T]) -> T:
    """:func:`complete` for a coroutine: the unit joins the group commit and the
    coroutine awaits it without a thread. A refusal's event is written even if the
    request is cancelled meanwhile."""
    if pending.unit is not None:
        try:
            await kernel.acommit(pending.unit)
        except (Unauthorized, Forbidden) as exc:
            if pending.refused is None:
                raise
            entry = pending.refused(exc)
            raise await asyncio.shield(kernel.adeny(exc, entry)) from None
    return pending.done()


async def asettle(kernel: Kernel, deferred: Deferred[T]) -> T:
    """The value of what ran under :func:`~tasklease.core.audit.deferring`, once the audit
    events it deferred are durable.

    They are written first (awaited, even if the request is cancelled meanwhile): a
    refusal is raised only once its event is durable, and if the events cannot be
    written the caller gets ``Unavailable`` instead of any answer. The guards it added
    (:class:`~tasklease.core.audit.Guard`: a DPoP proof recorded as used) are written in
    the same transaction, whether it succeeded or was refused; if one turns up a refusal
    (the proof was used before), that refusal is audited and raised, unless the request
    was refused already.
    """
    found: list[Guard] = []
    if deferred.guards:
        entries = deferred.entries
        guards = deferred.guards

        def unit(tx: WriteTx) -> Sequence[AuditEntry]:
            found[:] = [g for g in guards if not g.write(tx)]
            return entries

        await asyncio.shield(kernel.acommit(unit))
    elif deferred.entries:
        await asyncio.shield(kernel.arecord(*deferred.entries))
    if deferred.error is not None:
        raise deferred.error
    if found:
        raise await _refusal(kernel, found[0])
    return cast(T, deferred.value)


async def _refusal(kernel: Kernel, guard: Guard) -> Exception:
    """What a guard that turned up a refusal answers: its error, audited (a ``denial_id``
    and one event, written even if the request is cancelled meanwhile) unless it is an
    exception alone."""
    refusal = guard.refusal()
    if isinstance(refusal, Exception):
        return refusal
    return await asyncio.shield(kernel.adeny(*refusal))


async def aanswer(kernel: Kernel, deferred: Deferred[Pending[T]]) -> T:
    """Answer an operation whose first half ran under
    :func:`~tasklease.core.audit.deferring`: its deferred events written
    (:func:`asettle`), then the operation committed (:func:`acomplete`).

    Once decided, the operation runs to its end even if the request is cancelled (the
    client went away): a revocation or renewal that reaches the store is enforced by this
    process at once (``done``), as when it ran in a thread; only the answer is dropped.
    """
    pending = deferred.value
    if deferred.guards and deferred.error is None and pending is not None and pending.unit:
        # One transaction for the guards, the deferred events and the operation.
        return await asyncio.shield(_aguarded(kernel, deferred, pending, pending.unit))
    pending = await asettle(kernel, deferred)
    return await asyncio.shield(acomplete(kernel, pending))


async def _aguarded(
    kernel: Kernel, deferred: Deferred[Pending[T]], pending: Pending[T], operation: Unit
) -> T:
    """:func:`asettle` then :func:`acomplete` in one unit: the guards first (a DPoP proof
    recorded as used); if one turns up a refusal the operation does not run, else it runs
    in a savepoint of its own, so that its failure (a race lost) undoes its writes only
    and the proof stays spent, as it would after two transactions."""
    found: list[Guard] = []
    failed: list[Exception] = []

    def unit(tx: WriteTx) -> Sequence[AuditEntry]:
        found[:] = [g for g in deferred.guards if not g.write(tx)]
        failed.clear()
        if found:
            return deferred.entries
        try:
            with tx.savepoint():
                written = operation(tx)
        except Exception as exc:  # noqa: BLE001 - the operation's own failure, raised below
            failed.append(exc)
            return deferred.entries
        return [*deferred.entries, *written]

    await kernel.acommit(unit)
    if found:
        raise await _refusal(kernel, found[0])
    if failed:
        exc = failed[0]
        if isinstance(exc, Unauthorized | Forbidden) and pending.refused is not None:
            raise await asyncio.shield(kernel.adeny(exc, pending.refused(exc))) from None
        raise exc
    return pending.done()
