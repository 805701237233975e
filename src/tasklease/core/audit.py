"""The append-only, hash-chained audit log and the group committer that writes it.

Every broker operation runs as a *unit* inside :meth:`AuditLog.commit`: a function that
makes its state changes through a :class:`~tasklease.core.store.WriteTx` and returns the
audit entries that describe them. Units submitted concurrently share one transaction
(group commit: one fsync per batch, not per event); each runs inside its own savepoint,
so a unit that raises, whatever it raises (a refusal, a driver's error about one value,
a bug), undoes only its own writes and fails only its own caller. Only a failure of the
shared transaction itself (storage unreachable, disk full: the store's savepoint or
commit raises :class:`~tasklease.core.errors.Unavailable` and refuses every later
statement) fails the whole batch. The events are chained and appended in
the same transaction as the state they describe, so either both become durable or
neither does: the operation answers only after its event is durable, and an operation
whose event cannot be written fails (fail-closed, :class:`~tasklease.core.errors.Unavailable`).

The events' format, sanitizer and hash chain are :mod:`tasklease.core.auditformat`. The
same transaction appends the events' leaves to the tenant's Merkle tree
(:mod:`tasklease.core.audittree`), so the tree and the chain never disagree on what is
durable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tasklease.core.auditformat import (
    CURRENT_FORMAT,
    AuditEntry,
    event_hash,
    sanitized_entry,
)
from tasklease.core.audittree import append_leaves
from tasklease.core.clock import Clock, format_rfc3339
from tasklease.core.errors import (
    Conflict,
    FailureRun,
    TaskleaseError,
    Unavailable,
    failure_run,
)
from tasklease.core.handoff import run_on_loop
from tasklease.core.readahead import refuse as refuse_on_loop
from tasklease.core.records import AuditEvent, AuditTree
from tasklease.core.store import Store, WriteTx
from tasklease.rules.auditchain import event_leaf
from tasklease.rules.merkle import leaf_hash

__all__ = [
    "AuditLog",
    "Deferred",
    "Guard",
    "WriteFailure",
    "defer_guard",
    "deferral_active",
    "deferring",
]
_log = logging.getLogger("tasklease.audit")
T = TypeVar("T")

# Set by :func:`deferring`: audit-only entries recorded meanwhile are collected here
# instead of written, for the caller to write (awaited) before it answers.
_DEFERRED: ContextVar[list[AuditEntry] | None] = ContextVar("tasklease_deferred", default=None)


@dataclass(frozen=True, slots=True)
class Guard:
    """A write a request must make durable before it is answered, whatever the answer,
    and the refusal it may turn up: a DPoP proof recorded as used, say, which a replay
    finds already recorded.

    ``write`` runs inside the transaction that writes the request's deferred audit
    entries and says whether all is well; when it is not, ``refusal`` gives the error to
    answer and the entry that audits it (``Kernel.adeny``), or an exception alone, raised
    as is, for an answer that refuses nothing of the caller's (validation's ``{"valid":
    false}``).
    """

    write: Callable[[WriteTx], bool]
    refusal: Callable[[], tuple[TaskleaseError, AuditEntry] | Exception]


# Set by :func:`deferring` beside _DEFERRED: the guards added meanwhile (defer_guard).
_GUARDS: ContextVar[list[Guard] | None] = ContextVar("tasklease_guards", default=None)


@dataclass(slots=True)
class Deferred(Generic[T]):
    """What :func:`deferring` ran: its value or the exception it raised, and the
    audit-only entries it recorded and the guards it added, none of them written yet."""

    value: T | None
    error: Exception | None
    entries: list[AuditEntry] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)


def deferral_active() -> bool:
    """Whether a :func:`deferring` is under way here (this thread, this task)."""
    return _GUARDS.get() is not None


def defer_guard(guard: Guard) -> bool:
    """Add ``guard`` to what the :func:`deferring` under way writes before its caller
    answers; False (nothing added) when no deferring is under way."""
    guards = _GUARDS.get()
    if guards is None:
        return False
    guards.append(guard)
    return True


def deferring(fn: Callable[[], T]) -> Deferred[T]:
    """Run ``fn`` with every :meth:`AuditLog.record` (denials, audited reads) collected
    instead of written, so that it never waits for a commit (an event loop runs it inline).

    Whoever called this writes :attr:`Deferred.entries` (:meth:`AuditLog.arecord`) and
    waits until they are durable before it answers anything, the exception included: a
    refusal is still answered only once its audit event is durable, and fails closed
    (``Unavailable``) if it cannot be. A unit committed inside ``fn`` (:meth:`AuditLog.commit`)
    is written as usual: only audit-only entries wait. So do the :class:`Guard` writes
    added meanwhile (:func:`defer_guard`), written in one transaction with the entries.
    """
    entries: list[AuditEntry] = []
    guards: list[Guard] = []
    token = _DEFERRED.set(entries)
    guard_token = _GUARDS.set(guards)
    try:
        return Deferred(fn(), None, entries, guards)
    except Exception as exc:  # noqa: BLE001 - handed to the caller with what to write first
        return Deferred(None, exc, entries, guards)
    finally:
        _GUARDS.reset(guard_token)
        _DEFERRED.reset(token)


# --- the group committer ----------------------------------------------------------------

Unit = Callable[[WriteTx], Sequence[AuditEntry]]

RETRY_AFTER = 1
"""Seconds a caller refused because its operation could not be recorded should wait,
unless the store said otherwise."""


WriteFailure = FailureRun
"""A run of batches that could not be committed (see :meth:`AuditLog.failure`):
``summary`` is the latest batch's cause, in words safe to show; ``since`` and ``last``
are monotonic times of the first and the latest failed batch, ``rounds`` how many."""


class _Wake:
    """A one-shot wake-up for one waiting thread: a held lock that ``set`` releases.

    What ``threading.Event`` does for this one use without its condition variable: a
    caller's wait is one lock acquisition instead of a condition's lock, waiter list and
    second lock, which counts when dozens of threads wait on every commit.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        """Wake the waiter (once: later calls do nothing). Called under one of the log's
        locks: a queued caller's and a gate's under its lock, a batch's threads under its
        chain lock (a slot is in the queue or in a batch, never both)."""
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float = -1) -> None:
        """Wait until set (or ``timeout`` seconds at most, if given)."""
        self._lock.acquire(timeout=timeout)


# The most rounds of an event loop that its coroutines' units are gathered for before the
# committer starts (``AuditLog._gather``) ...
_GATHER_ROUNDS = 16
# ... and the longest (seconds) a loop with other work ready but no new unit holds them: a
# write that arrives while the loop is busy with reads waits for no more than that.
_GATHER_TIME = 0.01
# How long (seconds) the committer waits for a loop to start a batch's statements before
# it runs them itself (``tasklease.core.handoff``): far beyond a busy loop's round, which
# is a few milliseconds, so only a loop that is blocked or stopped is given up on.
_HANDOFF_PATIENCE = 0.1
# How long (seconds) after a batch a thread that leads the next one waits for the threads
# that batch woke to queue again (``AuditLog._await_returning``): about one commit's
# fsync. A thread that leads later than that waits for nothing.
_RETURN_WINDOW = 0.001


class _Slot:
    __slots__ = (
        "after",
        "done",
        "entries",
        "error",
        "events",
        "future",
        "gone",
        "loop",
        "unit",
        "wake",
    )

    def __init__(
        self,
        unit: Unit | None,
        entries: Sequence[AuditEntry] = (),
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.unit = unit  # None: an audit-only slot whose ``entries`` are already sanitized
        self.entries = entries
        self.done = False
        # A thread's slot in a batch: the next thread of the batch, woken when this one's
        # thread leaves (``AuditLog._pass_on``); ``gone`` once it has (chain lock held).
        self.after: _Slot | None = None
        self.gone = False
        self.error: BaseException | None = None
        self.events: list[AuditEvent] = []
        # A thread's slot waits on ``wake`` (set when done, or when handed the leadership);
        # a coroutine's slot on ``future``, resolved in its own loop. A coroutine's slot is
        # never handed the leadership: the committer thread leads for it.
        self.loop = loop
        self.future: asyncio.Future[list[AuditEvent]] | None = None
        self.wake: _Wake | None = None
        if loop is None:
            self.wake = _Wake()
        else:
            self.future = loop.create_future()


def _settle(slots: list[_Slot]) -> None:
    """In a slot's event loop: hand each waiting coroutine its answer."""
    for slot in slots:
        future = slot.future
        if future is None or future.done():  # the caller stopped waiting
            continue
        if slot.error is not None:
            future.set_exception(slot.error)
        else:
            future.set_result(slot.events)


def _wake_chain(slot: _Slot) -> None:
    """Wake ``slot``'s thread, or the first one after it that is still waiting (the log's
    chain lock held): a thread interrupted while it waited has left, and wakes no one."""
    current: _Slot | None = slot
    while current is not None and current.wake is not None:
        current.wake.set()
        if not current.gone:
            return
        current = current.after


class AuditLog:
    """Runs operations and their audit events as group-committed units.

    Callers queue their unit. If no transaction is being written the caller leads: it
    takes the whole queue and commits it in one transaction. Later callers wait on their
    own event while they queue up behind it. When the batch is durable the leader hands
    the leadership to the first caller still queued, which commits everything that
    arrived meanwhile, then wakes the callers it served: the first of them, which wakes
    the next as it leaves, and so on. A thread that leads right after a batch first waits
    (about an fsync at most) for the threads that batch woke to queue again. One wake-up
    per caller, no background thread (so nothing is lost to a thread that died).
    Audit-only entries (:meth:`record`) are sanitized by their caller and skip the
    savepoint.

    Coroutines queue the same way (:meth:`acommit`, :meth:`arecord`) but never block
    their event loop: when one of them would lead, one committer thread leads instead,
    and keeps leading while coroutines are queued. It is started once the loop has
    gathered the units that arrive together (:meth:`_gather`), not for the first of
    them. Their answers reach their loop with one call per batch, not one wake-up per
    caller. Where the store allows it (SQLite), the committer holds the transaction but
    hands its statements to the first coroutine's loop (:mod:`tasklease.core.handoff`).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        on_batch: Callable[[int, float], None] | None = None,
        on_recovery: Callable[[float], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        return_window: float = _RETURN_WINDOW,
    ) -> None:
        self._store = store
        self._return_window = return_window
        self._on_recovery = on_recovery
        self._on_failure = on_failure  # each failed batch (the audit append failures metric)
        self._clock = clock
        self._queue: list[_Slot] = []
        self._lock = threading.Lock()
        self._chain = threading.Lock()  # the threads' wake-up chains (``_pass_on``)
        self._leading = False
        # The event loop whose coroutines' units are being gathered into the next batch
        # (``_gather``), and how many were queued at its last round.
        self._gathering: asyncio.AbstractEventLoop | None = None
        self._gathered = 0
        # The threads the last batch woke, how many threads queued since, and when it
        # ended (``_await_returning``); the gate a leading thread waits on meanwhile.
        self._woken = 0
        self._back = 0
        self._ended = 0.0
        self._gate: _Wake | None = None
        self._on_batch = on_batch
        self._committer: ThreadPoolExecutor | None = None
        # The run of failed batches under way (None while batches commit); replaced, never
        # mutated, so readers in other threads see a consistent value without the lock.
        self._failure: WriteFailure | None = None
        self._last_seq = 0  # the audit head as of this process's last committed batch
        # The tree as this process's last committed batch left it: the next batch goes on
        # from it without reading it, if no other process appended meanwhile.
        self._tree: AuditTree | None = None

    def commit(self, unit: Unit) -> list[AuditEvent]:
        """Run ``unit`` in a group-committed transaction; return its durable events.

        Raises what the unit raised (its writes undone), or :class:`Unavailable` if the
        transaction could not be made durable (nothing of the unit is kept).
        """
        return self._submit(_Slot(unit))

    def record(self, *entries: AuditEntry) -> list[AuditEvent]:
        """Append events that describe no state change (denials, reads); return them durable.

        The entries are sanitized here, in the caller's thread, and the committer only
        chains and stores them: nothing of this runs inside the shared transaction but
        the hashing and the row. Inside :func:`deferring` they are collected instead (and
        nothing is returned): that caller writes them before it answers.
        """
        deferred = _DEFERRED.get()
        if deferred is not None:
            deferred.extend(entries)
            return []
        return self._submit(_Slot(None, [sanitized_entry(entry) for entry in entries]))

    async def acommit(self, unit: Unit) -> list[AuditEvent]:
        """:meth:`commit` for a coroutine: the unit runs in the committer thread.

        Cancelled while still queued, the unit is withdrawn and never runs; cancelled
        once its batch has started, it is committed (or not) all the same and only the
        answer is lost, as for a thread interrupted while waiting.
        """
        return await self._asubmit(_Slot(unit, loop=asyncio.get_running_loop()))

    async def arecord(self, *entries: AuditEntry) -> list[AuditEvent]:
        """:meth:`record` for a coroutine (sanitized here, chained by the committer)."""
        clean = [sanitized_entry(entry) for entry in entries]
        return await self._asubmit(_Slot(None, clean, loop=asyncio.get_running_loop()))

    @property
    def last_seq(self) -> int:
        """The audit log's length as of the last batch this process committed (0 before
        the first): known without reading storage; other processes may have added more."""
        return self._last_seq

    def failure(self) -> WriteFailure | None:
        """The failed batches since the last one that committed, or None if it committed.

        Readiness reads it: while writes fail, the broker is not ready to take them.
        """
        return self._failure

    def _failed(self, exc: BaseException) -> None:
        """Count a failed batch; log the first of a run, and a cause the run has not had, only."""
        if self._on_failure is not None:
            self._on_failure()
        self._failure, new = failure_run(self._failure, exc, time.monotonic())
        if new:
            _log.error(
                "audit writes fail: %s; operations that change state are refused until "
                "storage recovers (logged once)",
                self._failure.summary,
            )

    def _succeeded(self) -> None:
        failure = self._failure
        if failure is not None:
            self._failure = None
            outage = time.monotonic() - failure.since
            _log.warning(
                "audit writes succeed again after %d failed batches in %.1fs (%s)",
                failure.rounds,
                outage,
                "; ".join(sorted(failure.causes)),
            )
            if self._on_recovery is not None:
                self._on_recovery(outage)

    def close(self) -> None:
        """Stop the committer thread once it has written what is queued (idempotent)."""
        with self._lock:
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.shutdown(wait=True)

    def catch_up_tree(self, limit: int = 50_000) -> int:
        """Give the Merkle tree up to ``limit`` events it has not taken yet (events written
        before it existed); return how many are still missing after this transaction.

        Appends do this themselves for whatever is missing, in their own transaction; at
        start-up the broker calls this until it returns 0, so no request pays for it.
        """
        with self._store.write() as tx:
            head, _ = tx.audit_head()
            tree = tx.audit_tree()
            size = tree.size if tree is not None else 0
            hashes = tx.audit_hashes(size, min(limit, head - size)) if head > size else []
            if hashes:
                tree, tiles = append_leaves(tree, [event_leaf(h) for h in hashes])
                tx.append_audit_tree(tree, tiles)
            return head - size - len(hashes)

    def _submit(self, slot: _Slot) -> list[AuditEvent]:
        refuse_on_loop("a write")  # a first half run ahead of its reads stops: in a thread
        wake = slot.wake
        if wake is None:  # pragma: no cover - a thread's slot always has one
            raise TypeError("a coroutine's slot cannot be submitted from a thread")
        with self._lock:
            self._queue.append(slot)
            follow = self._leading
            self._leading = True
            self._back += 1
            gate = self._gate
            if gate is not None and self._back >= self._woken:
                self._gate = None
                gate.set()
        try:
            if follow:
                try:
                    wake.wait()  # our batch is done, or the leadership was handed to us
                except BaseException:
                    self._withdraw(slot)  # interrupted (a signal in the main thread)
                    raise
            if not slot.done:
                self._lead()
        finally:
            self._pass_on(slot)
        if slot.error is not None:
            raise slot.error
        return slot.events

    async def _asubmit(self, slot: _Slot) -> list[AuditEvent]:
        future, loop = slot.future, slot.loop
        if future is None or loop is None:  # pragma: no cover - a coroutine's slot has both
            raise TypeError("a thread's slot cannot be awaited")
        with self._lock:
            self._queue.append(slot)
            gather = not self._leading and self._gathering is not loop
            if gather:
                self._gathering = loop
                self._gathered = len(self._queue)
        if gather:
            loop.call_soon(self._gather, loop, _GATHER_ROUNDS, time.monotonic() + _GATHER_TIME)
        try:
            return await future
        except asyncio.CancelledError:
            self._withdraw(slot)
            raise

    def _gather(self, loop: asyncio.AbstractEventLoop, rounds: int, until: float) -> None:
        """Start the committer for the coroutines of ``loop`` once a round of the loop
        queued no more units and left nothing else ready to run: after ``rounds`` more
        rounds at most, and past the monotonic time ``until`` other ready work no longer
        holds it back.

        Requests that arrive together run in the same rounds of the loop: waiting for them
        makes one batch of what would have been several, each paying its write turn,
        ``BEGIN`` and commit. An idle loop ends its round at once, so a lone request waits
        for nothing. A thread that leads meanwhile takes the queue; this then does nothing.
        """
        refused: list[_Slot] = []
        with self._lock:
            if self._gathering is not loop:
                return
            queued = len(self._queue)
            # asyncio's loop shows what is ready to run (uvloop does not: the growth
            # of the queue alone decides there).
            ready = getattr(loop, "_ready", None)
            waiting = queued > self._gathered or (bool(ready) and time.monotonic() < until)
            more = waiting and rounds > 1 and not self._leading
            if more:
                self._gathered = queued
            else:
                self._gathering = None
                if self._leading or not queued:  # a thread leads, or every caller left
                    return
                self._leading = True
                refused = self._start_committer_locked()  # releases the seat if it fails
        if more:
            loop.call_soon(self._gather, loop, rounds - 1, until)
        elif refused:
            self._wake(refused)

    def _start_committer_locked(self) -> list[_Slot]:
        """Lead for the queued coroutines in the committer thread (lock held).

        Returns the slots to fail if no thread can be started (the interpreter is
        shutting down): they are taken off the queue and the leadership is released.
        """
        try:
            if self._committer is None:
                self._committer = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="tasklease-audit"
                )
            self._committer.submit(self._lead, committer=True)
        except RuntimeError as exc:
            refused, self._queue = self._queue, []
            self._leading = False
            _fail(refused, f"audit committer unavailable: {exc}")
            for slot in refused:
                slot.done = True
            return refused
        return []

    def _hand_on_locked(self) -> list[_Slot]:
        """Pass the leadership to the first queued caller (lock held); see _start_committer."""
        if not self._queue:
            self._leading = False
            return []
        head = self._queue[0]
        if head.wake is not None:
            head.wake.set()  # the next leader; _leading stays True
            return []
        return self._start_committer_locked()

    def _withdraw(self, slot: _Slot) -> None:
        """Take back a slot whose caller stopped waiting, so the queue never stalls.

        Still queued, it is removed; if the leadership had been handed to it meanwhile,
        it goes to the next caller. Already in a batch, it is committed (or not) as if
        the caller were still there; only the answer is lost.
        """
        refused: list[_Slot] = []
        with self._lock:
            if slot not in self._queue:
                return
            self._queue.remove(slot)
            if slot.wake is not None and slot.wake.is_set():  # woken while queued: to lead
                refused = self._hand_on_locked()
        if refused:
            self._wake(refused)

    def _await_returning(self) -> None:
        """A thread about to lead: wait, until ``return_window`` seconds after the last
        batch ended, for the threads that batch woke to queue again.

        Threads that commit one after another would otherwise split into two halves that
        take turns, each batch written while the other half queues: twice the commits for
        the same events, and each commit's fixed cost (the write turn, ``BEGIN``, the
        fsync) is most of a batch's. Coroutines are gathered by their loop instead.
        """
        with self._lock:
            wait = self._ended + self._return_window - time.monotonic()
            if self._back >= self._woken or wait <= 0:
                return
            gate = self._gate = _Wake()
        gate.wait(wait)
        with self._lock:
            if self._gate is gate:
                self._gate = None

    def _lead(self, *, committer: bool = False) -> None:
        again = True
        while again:
            if not committer:
                self._await_returning()
            with self._lock:
                batch, self._queue = self._queue, []
            refused: list[_Slot] = []
            written = False
            try:
                if batch:  # empty when the only queued coroutine was cancelled meanwhile
                    self._run(batch, self._statements_loop(batch) if committer else None)
                written = True
            finally:
                # Hand the leadership on first, so the next batch is being written while
                # this one's callers are woken (each wake-up is a system call). The
                # committer thread keeps it while coroutines are queued first.
                with self._lock:
                    self._woken = sum(1 for slot in batch if slot.wake is not None)
                    self._back = 0
                    self._ended = time.monotonic()
                    head = self._queue[0] if self._queue else None
                    again = written and committer and head is not None and head.wake is None
                    if not again:
                        refused = self._hand_on_locked()
                self._wake(batch)
                if refused:
                    self._wake(refused)

    def _wake(self, batch: list[_Slot]) -> None:
        """Wake the threads of ``batch`` in a chain, its coroutines with one call per loop.

        Only the first thread is woken here; each wakes the next as it leaves
        :meth:`_submit` (:meth:`_pass_on`). Woken all at once, dozens of threads would
        contend for the GIL together, and each hand-over between them costs system
        calls: one runnable thread at a time takes a third less CPU per event.
        """
        loops: dict[asyncio.AbstractEventLoop, list[_Slot]] = {}
        first: _Slot | None = None
        last: _Slot | None = None
        for served in batch:
            if served.wake is not None:
                if last is None:
                    first = served
                else:
                    last.after = served
                last = served
            elif served.loop is not None:
                loops.setdefault(served.loop, []).append(served)
        if first is not None:
            with self._chain:
                _wake_chain(first)
        for loop, slots in loops.items():
            try:
                loop.call_soon_threadsafe(_settle, slots)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                continue

    def _pass_on(self, slot: _Slot) -> None:
        """``slot``'s thread is leaving: wake the next thread of its batch, if any."""
        with self._chain:
            slot.gone = True
            if slot.after is not None:
                _wake_chain(slot.after)

    def _statements_loop(self, batch: list[_Slot]) -> asyncio.AbstractEventLoop | None:
        """The running loop of the batch's first coroutine, if the store lets that loop's
        thread run the batch's statements (``Store.statements_on_loop``)."""
        if not self._store.statements_on_loop:
            return None
        for slot in batch:
            loop = slot.loop
            if loop is not None:
                return loop if loop.is_running() else None
        return None

    def _run(self, batch: list[_Slot], loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Write ``batch`` in one transaction: its statements on ``loop``'s thread when one
        is given (``tasklease.core.handoff``); the write turn, ``BEGIN`` and the commit in
        this thread."""
        started = time.perf_counter()
        try:
            with self._store.write() as tx:
                if loop is None:
                    seq, tree = self._statements(tx, batch)
                else:
                    (seq, tree), _ = run_on_loop(
                        loop, lambda: self._statements(tx, batch), patience=_HANDOFF_PATIENCE
                    )
        except Exception as exc:  # noqa: BLE001 - any storage failure fails the batch closed
            self._failed(exc)
            _fail(batch, f"audit transaction failed: {exc!r}", exc)
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit, ...: the transaction was rolled back, so no
            # caller of this batch may see its events as durable. The leader re-raises.
            _fail(batch, f"audit transaction interrupted: {type(exc).__name__}")
            raise
        else:
            self._last_seq = max(self._last_seq, seq)
            if tree is not None:
                self._tree = tree
                # Only a batch that appended events shows audited writes work again: one
                # that appended none (a claim, a publication) commits under a lock held on
                # the audit table while every audited operation still fails.
                self._succeeded()
        finally:
            for slot in batch:
                slot.done = True
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - metrics must not fail a durable batch
                _log.exception("audit batch callback failed")

    def _statements(self, tx: WriteTx, batch: list[_Slot]) -> tuple[int, AuditTree | None]:
        """The batch's units, each in its savepoint, then their events chained and appended
        with the tree's new leaves; returns the last seq and the tree (None: no event)."""
        tenant = self._store.tenant
        seq, prev = tx.audit_head()
        # One time for the whole batch: its events become durable together.
        timestamp = format_rfc3339(self._clock.now())
        rows: list[AuditEvent] = []
        for slot in batch:
            unit = slot.unit
            if unit is None:
                entries = slot.entries
            else:
                try:
                    with tx.savepoint():
                        entries = [sanitized_entry(e) for e in unit(tx)]
                except Exception as exc:  # noqa: BLE001 - the unit's own failure
                    # Its writes are undone; its caller gets what it raised. If
                    # the shared transaction was lost with it, the store refuses
                    # every later statement and the commit, so the batch fails.
                    slot.error = exc
                    continue
            for clean in entries:
                seq += 1
                digest = event_hash(prev, seq, timestamp, clean, tenant)
                # Positional (field order of AuditEvent): half the cost of
                # nineteen keywords, per event, inside the shared transaction.
                event = AuditEvent(
                    seq,
                    timestamp,
                    clean.event_type,
                    clean.agent_id,
                    clean.task_id,
                    clean.orch_id,
                    clean.detail,
                    clean.resource,
                    clean.outcome,
                    clean.deleg_depth,
                    clean.deleg_chain_hash,
                    clean.request_id,
                    prev,
                    digest,
                    tenant,
                    clean.app_id,
                    clean.principal_ref,
                    clean.chain_root,
                    CURRENT_FORMAT,
                )
                rows.append(event)
                slot.events.append(event)
                prev = digest
        if not rows:
            return seq, None
        tx.append_audit(rows)
        return seq, _grow_tree(tx, rows, self._tree)


def _grow_tree(tx: WriteTx, rows: Sequence[AuditEvent], known: AuditTree | None) -> AuditTree:
    """Append ``rows``' leaves to the tenant's Merkle tree, in the events' transaction;
    return the tree.

    ``known`` is the tree this process last committed: when it ends right before the
    first row, no one appended since and it is the tree on record (a tile that does not
    fit would fail the batch all the same). Otherwise the tree is read, and events it has
    not taken yet (written before it existed) go first, so leaf ``seq - 1`` is always
    event ``seq``. A tree ahead of the chain fails the batch: the two were written apart,
    which only a hand on the database can do.
    """
    first = rows[0].seq - 1
    tree = known if known is not None and known.size == first else tx.audit_tree()
    size = tree.size if tree is not None else 0
    leaves: list[bytes] = []
    if size < first:
        leaves = [event_leaf(h) for h in tx.audit_hashes(size, first - size)]
    if size + len(leaves) != first:
        raise Conflict(f"the audit tree holds {size} leaves but the chain {first} events")
    # Our own hashes, well-formed by construction: no need for event_leaf's check.
    leaves.extend(leaf_hash(bytes.fromhex(e.hash)) for e in rows)
    tree, tiles = append_leaves(tree, leaves)
    tx.append_audit_tree(tree, tiles)
    return tree


def _fail(batch: list[_Slot], reason: str, cause: BaseException | None = None) -> None:
    """Nothing of ``batch`` is durable: every caller not already refused gets Unavailable.

    When the store said why (its :class:`Unavailable`: the disk is full, the database did
    not answer), the callers are told that too, and when to try again.
    """
    detail = "the operation could not be recorded; nothing was changed"
    retry_after = RETRY_AFTER
    if isinstance(cause, Unavailable):
        detail = f"the operation could not be recorded ({cause.detail}); nothing was changed"
        retry_after = cause.retry_after or RETRY_AFTER
    for slot in batch:
        if slot.error is None:
            slot.error = Unavailable(detail, reason=reason, retry_after=retry_after)
        slot.events = []
