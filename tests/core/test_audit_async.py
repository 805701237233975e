"""The audit log's coroutine path: ``AuditLog.acommit`` / ``arecord`` and the committer thread.

Coroutines queue with threads on the same group commit but never block their event loop:
the committer thread leads for them. These tests pin the hand-overs between the two kinds
of callers, cancellation, failures, and the broker's registration split in two.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.audit import AuditLog, _Slot
from tasklease.core.auditformat import AuditEntry, verify_chain
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Conflict, Unauthorized, Unavailable
from tasklease.core.launch import launch_token_hash
from tasklease.core.store import RevocationRecord
from tasklease.storage import MemoryStore, SQLiteStore


async def _await_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def test_coroutines_share_batches_and_one_chain_on_sqlite(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "audit.db")
    batches: list[int] = []
    log = AuditLog(store, ManualClock(), on_batch=lambda size, _s: batches.append(size))
    n = 200

    async def main() -> list[list[Any]]:
        return await asyncio.gather(
            *(log.arecord(AuditEntry("e", detail=f"n={i}", agent_id=f"a{i}")) for i in range(n))
        )

    try:
        answers = asyncio.run(main())
        assert sorted(events[0].seq for events in answers) == list(range(1, n + 1))
        # Each coroutine is answered with its own event, durable in the file.
        for i, events in enumerate(answers):
            assert events[0].agent_id == f"a{i}"
        assert sum(batches) == n
        assert len(batches) < n  # grouped: fewer transactions than events
        assert verify_chain(store.iter_audit()).ok
    finally:
        log.close()
        store.close()
    reopened = SQLiteStore(tmp_path / "audit.db")
    try:
        assert reopened.audit_head()[0] == n
    finally:
        reopened.close()


def test_threads_and_coroutines_interleave_without_stalling() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    per_side = 300
    thread_seqs: list[int] = []
    errors: list[BaseException] = []

    def thread_side(k: int) -> None:
        try:
            for i in range(per_side // 4):
                thread_seqs.append(log.record(AuditEntry("t", detail=f"{k}/{i}"))[0].seq)
        except BaseException as exc:
            errors.append(exc)

    async def coroutine_side() -> list[int]:
        async def one(i: int) -> int:
            await asyncio.sleep(0)
            return (await log.arecord(AuditEntry("c", detail=str(i))))[0].seq

        return list(await asyncio.gather(*(one(i) for i in range(per_side))))

    threads = [threading.Thread(target=thread_side, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    coroutine_seqs = asyncio.run(coroutine_side())
    for t in threads:
        t.join(timeout=30)
    log.close()
    assert errors == []
    seqs = sorted(thread_seqs + coroutine_seqs)
    assert seqs == list(range(1, 2 * per_side + 1))
    assert verify_chain(store.iter_audit()).ok


def test_acommit_runs_the_unit_in_the_committer_thread() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    ran_in: list[str] = []

    def unit(tx: Any) -> list[AuditEntry]:
        ran_in.append(threading.current_thread().name)
        tx.insert_revocation(RevocationRecord("token", "jti-1", 1, 10**10))
        return [AuditEntry("token_revoked", detail="jti-1")]

    async def main() -> list[Any]:
        return await log.acommit(unit)

    events = asyncio.run(main())
    log.close()
    assert [e.event_type for e in events] == ["token_revoked"]
    assert ran_in[0].startswith("tasklease-audit")
    assert [r.target for r in store.revocations_since(0)] == ["jti-1"]


def test_on_sqlite_a_coroutine_batch_runs_its_statements_on_the_loop_thread(
    tmp_path: Path,
) -> None:
    # The write turn, BEGIN and the commit stay in the committer thread; the units in
    # between run on the loop's thread (core.handoff), not handing the GIL over per
    # statement. What is answered is durable all the same.
    store = SQLiteStore(tmp_path / "loop.db")
    log = AuditLog(store, ManualClock())
    ran_on: list[int] = []

    def unit(tx: Any) -> list[AuditEntry]:
        ran_on.append(threading.get_ident())
        tx.insert_revocation(RevocationRecord("token", "jti-loop", 1, 10**10))
        return [AuditEntry("token_revoked", detail="jti-loop")]

    async def main() -> tuple[int, list[Any]]:
        return threading.get_ident(), await log.acommit(unit)

    try:
        loop_thread, events = asyncio.run(main())
    finally:
        log.close()
        store.close()
    assert ran_on == [loop_thread]
    assert [e.event_type for e in events] == ["token_revoked"]
    reopened = SQLiteStore(tmp_path / "loop.db")
    try:
        assert [r.target for r in reopened.revocations_since(0)] == ["jti-loop"]
        assert reopened.audit_head()[0] == 1
    finally:
        reopened.close()


def test_a_unit_on_the_loop_that_opens_a_second_transaction_is_refused_not_deadlocked(
    tmp_path: Path,
) -> None:
    # On the loop's thread the committer's transaction is still ours: write() inside it is
    # the reentrancy error it is on the committer's thread, not a wait for our own lock.
    store = SQLiteStore(tmp_path / "reenter.db")
    log = AuditLog(store, ManualClock())

    def unit(tx: Any) -> list[AuditEntry]:
        with store.write():
            pass
        return [AuditEntry("never")]

    async def main() -> None:
        with pytest.raises(RuntimeError, match="not reentrant"):
            await log.acommit(unit)
        assert (await log.arecord(AuditEntry("next")))[0].seq == 1

    try:
        asyncio.run(main())
    finally:
        log.close()
        store.close()


class _EnteredStore(SQLiteStore):
    """A SQLite store whose write(), once entered, waits until the test lets it go on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.go_on = threading.Event()

    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        with super().write() as tx:
            self.entered.set()
            self.go_on.wait(10)
            yield tx


def test_a_blocked_loop_does_not_stall_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop is stuck in a synchronous wait while the committer holds the transaction:
    # after its patience the committer runs the statements itself, once.
    monkeypatch.setattr("tasklease.core.audit._HANDOFF_PATIENCE", 0.05)
    store = _EnteredStore(tmp_path / "blocked.db")
    log = AuditLog(store, ManualClock())
    ran_on: list[int] = []
    unit_ran = threading.Event()

    def unit(tx: Any) -> list[AuditEntry]:
        ran_on.append(threading.get_ident())
        unit_ran.set()
        tx.insert_revocation(RevocationRecord("token", "jti-late", 1, 10**10))
        return [AuditEntry("token_revoked", detail="jti-late")]

    async def main() -> tuple[int, list[Any]]:
        task = asyncio.create_task(log.acommit(unit))
        await asyncio.to_thread(store.entered.wait, 10)  # the committer holds the turn
        store.go_on.set()
        # Blocked, as a loop waiting on a lock the committer holds would be.
        if not unit_ran.wait(10):
            raise AssertionError("the committer waited for the blocked loop")
        return threading.get_ident(), await task

    try:
        loop_thread, events = asyncio.run(main())
    finally:
        log.close()
        store.close()
    assert len(ran_on) == 1 and ran_on[0] != loop_thread
    assert [e.seq for e in events] == [1]
    reopened = SQLiteStore(tmp_path / "blocked.db")
    try:
        assert [r.target for r in reopened.revocations_since(0)] == ["jti-late"]
    finally:
        reopened.close()


def test_a_failing_coroutine_unit_undoes_only_its_own_writes() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())

    def bad(tx: Any) -> list[AuditEntry]:
        tx.insert_revocation(RevocationRecord("token", "bad", 1, 10**10))
        raise Conflict("no")

    def good(tx: Any) -> list[AuditEntry]:
        tx.insert_revocation(RevocationRecord("token", "good", 1, 10**10))
        return [AuditEntry("ok")]

    async def main() -> list[Any]:
        return await asyncio.gather(log.acommit(bad), log.acommit(good), return_exceptions=True)

    outcome = asyncio.run(main())
    log.close()
    assert isinstance(outcome[0], Conflict)
    assert [e.seq for e in outcome[1]] == [1]
    assert [r.target for r in store.revocations_since(0)] == ["good"]


class _BrokenStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def write(self) -> Any:
        if self.failing:
            raise OSError("disk full")
        return super().write()


def test_a_storage_failure_reaches_every_coroutine_as_unavailable() -> None:
    store = _BrokenStore()
    log = AuditLog(store, ManualClock())

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(log.arecord(AuditEntry("e")) for _ in range(5)), return_exceptions=True
        )

    outcome = asyncio.run(main())
    assert all(isinstance(o, Unavailable) for o in outcome)
    store.failing = False
    assert asyncio.run(log.arecord(AuditEntry("after")))[0].seq == 1  # the log goes on
    log.close()


def test_a_coroutine_cancelled_while_queued_is_withdrawn_and_never_runs() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    ran: list[str] = []

    def unit(_tx: Any) -> list[AuditEntry]:
        ran.append("unit")
        return [AuditEntry("never")]

    async def main() -> None:
        with log._lock:  # someone else holds the leader's seat
            log._leading = True
        task = asyncio.create_task(log.acommit(unit))
        await _await_for(lambda: len(log._queue) == 1, "the slot to queue")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log._queue == []
        with log._lock:  # the seat's holder finishes with nothing left to do
            log._leading = False
        assert (await log.arecord(AuditEntry("next")))[0].seq == 1

    asyncio.run(main())
    log.close()
    assert ran == []


def test_a_coroutine_cancelled_mid_batch_is_still_committed() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    entered, release = threading.Event(), threading.Event()

    def slow(tx: Any) -> list[AuditEntry]:
        entered.set()
        release.wait(10)
        tx.insert_revocation(RevocationRecord("token", "kept", 1, 10**10))
        return [AuditEntry("token_revoked")]

    async def main() -> None:
        task = asyncio.create_task(log.acommit(slow))
        await _await_for(entered.is_set, "the unit to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        # The batch completes; its answer goes nowhere, and the loop is not disturbed.
        await _await_for(lambda: not log._leading, "the batch to finish")
        assert (await log.arecord(AuditEntry("next")))[0].seq == 2

    asyncio.run(main())
    log.close()
    assert [r.target for r in store.revocations_since(0)] == ["kept"]


def test_a_thread_leader_hands_over_to_the_committer_for_a_coroutine() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    entered, release = threading.Event(), threading.Event()
    names: list[str] = []

    def held(_tx: Any) -> list[AuditEntry]:
        entered.set()
        release.wait(10)
        return [AuditEntry("first")]

    def second(_tx: Any) -> list[AuditEntry]:
        names.append(threading.current_thread().name)
        return [AuditEntry("second")]

    leader = threading.Thread(target=log.commit, args=(held,), name="caller-thread")
    leader.start()
    entered.wait(10)

    async def main() -> list[Any]:
        task = asyncio.create_task(log.acommit(second))
        await _await_for(lambda: len(log._queue) == 1, "the coroutine to queue")
        release.set()  # the thread's batch ends with a coroutine first in line
        return await task

    events = asyncio.run(main())
    leader.join(10)
    log.close()
    assert [e.seq for e in events] == [2]
    assert names[0].startswith("tasklease-audit")


def test_the_committer_hands_over_to_a_queued_thread() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    entered, release = threading.Event(), threading.Event()
    names: list[str] = []

    def held(_tx: Any) -> list[AuditEntry]:
        entered.set()
        release.wait(10)
        return [AuditEntry("first")]

    def second(_tx: Any) -> list[AuditEntry]:
        names.append(threading.current_thread().name)
        return [AuditEntry("second")]

    answers: list[Any] = []

    async def main() -> list[Any]:
        task = asyncio.create_task(log.acommit(held))
        await _await_for(entered.is_set, "the committer to run the first unit")
        follower = threading.Thread(
            target=lambda: answers.append(log.commit(second)), name="caller-thread"
        )
        follower.start()
        await _await_for(lambda: len(log._queue) == 1, "the thread to queue")
        release.set()
        events = await task
        await asyncio.to_thread(follower.join, 10)
        return events

    first = asyncio.run(main())
    log.close()
    assert [e.seq for e in first] == [1]
    assert [e.seq for e in answers[0]] == [2]
    assert names == ["caller-thread"]  # the thread led its own batch
    assert log._leading is False


def test_no_committer_thread_fails_closed_and_releases_the_seat() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    refused = ThreadPoolExecutor(max_workers=1)
    refused.shutdown()  # as at interpreter shutdown: submit raises RuntimeError
    log._committer = refused

    async def main() -> None:
        with pytest.raises(Unavailable):
            await log.arecord(AuditEntry("e"))

    asyncio.run(main())
    assert log._leading is False
    assert log._queue == []
    assert store.audit_head()[0] == 0
    log._committer = None
    assert log.record(AuditEntry("after"))[0].seq == 1


def test_an_answer_for_a_closed_loop_is_dropped_quietly() -> None:
    loop = asyncio.new_event_loop()
    slot = _Slot(None, [AuditEntry("e")], loop=loop)
    loop.close()
    log = AuditLog(MemoryStore(), ManualClock())
    log._wake([slot])  # must not raise: nobody is waiting in a closed loop
    assert slot.future is not None and not slot.future.done()


def test_close_writes_what_is_queued_and_the_log_can_be_used_again() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())

    async def main() -> None:
        await asyncio.gather(*(log.arecord(AuditEntry("e")) for _ in range(10)))

    asyncio.run(main())
    log.close()
    log.close()  # idempotent
    assert store.audit_head()[0] == 10
    asyncio.run(main())  # a new committer thread on demand
    log.close()
    assert store.audit_head()[0] == 20


# --- the broker's registration, split for an event loop ----------------------------------


def test_prepare_then_complete_register(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    pending = broker.prepare_register(**args)
    assert broker.store.get_agent(pending.issued.claims.sub) is None  # nothing committed yet
    issued = asyncio.run(broker.complete_register(pending))
    broker.audit.close()
    assert broker.store.get_agent(issued.claims.sub) is not None
    assert broker.store.get_launch_token(launch_token_hash(launch)).consumed_at is not None
    assert broker.validate(issued.token).sub == issued.claims.sub
    events = [e.event_type for e in broker.store.iter_audit()][-2:]
    assert events == ["agent_registered", "token_issued"]
    assert verify_chain(broker.store.iter_audit()).ok


def test_two_pending_registrations_of_one_launch_token_one_wins(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker, single_use=True)
    first = broker.prepare_register(**kit.register_args(broker, launch, task_id="t1")[0])
    second = broker.prepare_register(**kit.register_args(broker, launch, task_id="t2")[0])

    async def main() -> list[Any]:
        return await asyncio.gather(
            broker.complete_register(first),
            broker.complete_register(second),
            return_exceptions=True,
        )

    outcome = asyncio.run(main())
    broker.audit.close()
    assert outcome[0].claims.sub == first.issued.claims.sub
    assert isinstance(outcome[1], Unauthorized)
    assert outcome[1].denial_id.startswith("den_")
    assert broker.store.get_agent(second.issued.claims.sub) is None
    denial = list(broker.store.iter_audit())[-1]
    assert denial.event_type == "registration_failed"
    assert f"denial={outcome[1].denial_id}" in denial.detail
    assert verify_chain(broker.store.iter_audit()).ok


def _failures(broker: Any) -> float:
    return float(broker.metrics.registrations.labels("failure")._value.get())


def test_prepare_writes_nothing_for_a_refusal_and_complete_audits_it(broker: Any, kit: Any) -> None:
    args, _ = kit.register_args(broker, "a" * 64)  # well formed, never issued
    head = broker.store.audit_head()
    failures = _failures(broker)
    pending = broker.prepare_register(**args)
    assert pending.issued is None
    assert broker.store.audit_head() == head  # nothing written on the caller's side
    with pytest.raises(Unauthorized) as info:
        asyncio.run(broker.complete_register(pending))
    broker.audit.close()
    assert info.value.denial_id.startswith("den_")
    last = list(broker.store.iter_audit())[-1]
    assert last.event_type == "registration_failed"
    assert f"denial={info.value.denial_id}" in last.detail
    assert "launch token not found" in last.detail
    assert _failures(broker) == failures + 1  # counted once


def test_a_failed_proof_spends_the_nonce_only_when_completed(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    forged = dict(args, signature=kit.register_args(broker, launch)[0]["signature"])
    pending = broker.prepare_register(**forged)  # signed over another nonce
    assert pending.issued is None and pending.unit is not None
    with pytest.raises(Unauthorized, match="nonce signature verification failed"):
        asyncio.run(broker.complete_register(pending))
    broker.audit.close()
    last = list(broker.store.iter_audit())[-1]
    assert last.event_type == "registration_failed"
    assert pending.refusal is not None
    assert f"denial={pending.refusal.denial_id}" in last.detail
    with pytest.raises(Unauthorized, match="nonce already consumed"):
        broker.register(**args)  # the honest request with the spent nonce
    assert broker.store.get_launch_token(launch_token_hash(launch)).consumed_at is None


def test_an_unaudited_bad_request_writes_no_event(broker: Any, kit: Any) -> None:
    """A malformed field is refused without an audit event; unsigned, it writes nothing
    and raises from the first half; signed by the key, it spends its nonce (decision
    262)."""
    from tasklease.core.errors import InvalidRequest

    args, _ = kit.register_args(broker, kit.launch(broker))
    head = broker.store.audit_head()
    with pytest.raises(InvalidRequest):
        broker.prepare_register(**dict(args, orch_id="not a segment/", signature="A" * 86 + "=="))
    pending = broker.prepare_register(**dict(args, orch_id="not a segment/"))
    assert isinstance(pending.refusal, InvalidRequest) and pending.denial is None
    with pytest.raises(InvalidRequest):
        asyncio.run(broker.complete_register(pending))
    assert broker.store.audit_head() == head
    with pytest.raises(Unauthorized, match="nonce"):
        broker.register(**args)


def test_a_committer_started_for_a_withdrawn_coroutine_writes_no_empty_batch() -> None:
    store = MemoryStore()
    batches: list[int] = []
    log = AuditLog(store, ManualClock(), on_batch=lambda size, _s: batches.append(size))
    gate = threading.Event()
    # Occupy the committer thread so the job started for our coroutine waits behind it.
    log._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tasklease-audit")
    log._committer.submit(gate.wait, 10)

    async def main() -> None:
        task = asyncio.create_task(log.arecord(AuditEntry("withdrawn")))
        await _await_for(lambda: len(log._queue) == 1, "the slot to queue")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await _await_for(lambda: not log._leading, "the committer to give up the seat")

    asyncio.run(main())
    log.close()
    assert batches == []
    assert store.audit_head()[0] == 0


def test_a_refusal_is_audited_even_if_the_request_is_cancelled(broker: Any, kit: Any) -> None:
    args, _ = kit.register_args(broker, "c" * 64)  # well formed, never issued
    pending = broker.prepare_register(**args)
    assert pending.refusal is not None
    log = broker.audit

    async def main() -> None:
        with log._lock:  # someone else holds the leader's seat: the denial stays queued
            log._leading = True
        task = asyncio.create_task(broker.complete_register(pending))
        await _await_for(lambda: len(log._queue) == 1, "the denial to queue")
        task.cancel()  # the client went away, or the server is shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(log._queue) == 1  # not withdrawn
        with log._lock:  # the seat's holder leaves; the next caller's committer takes all
            log._leading = False
        await log.arecord(AuditEntry("next"))

    asyncio.run(main())
    log.close()
    details = [e.detail for e in broker.store.iter_audit()]
    assert any(f"denial={pending.refusal.denial_id}" in d for d in details)


def test_a_failing_batch_callback_neither_fails_the_batch_nor_stalls_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_size: int, _seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    log = AuditLog(MemoryStore(), ManualClock(), on_batch=broken)
    assert log.record(AuditEntry("one"))[0].seq == 1
    assert asyncio.run(log.arecord(AuditEntry("two")))[0].seq == 2
    log.close()
    assert "audit batch callback failed" in caplog.text


def test_units_queued_in_the_same_rounds_of_the_loop_are_one_batch() -> None:
    # Requests that arrive together run in the same rounds of the event loop; the
    # committer starts only once a round queued nothing more, so they share one commit
    # (each commit pays a write turn, BEGIN and an fsync).
    store = MemoryStore()
    batches: list[int] = []
    log = AuditLog(store, ManualClock(), on_batch=lambda size, _s: batches.append(size))

    async def main() -> None:
        writers = [asyncio.ensure_future(log.arecord(AuditEntry(f"e{i}"))) for i in range(20)]
        await asyncio.gather(*writers)

    try:
        asyncio.run(main())
    finally:
        log.close()
    assert batches == [20]


def test_a_write_is_not_held_back_by_a_loop_that_never_runs_dry() -> None:
    # The gathering waits while the loop has work ready, but only so long: a loop busy
    # with other requests (here a callback that always schedules itself again) still
    # gets its write committed.
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    rounds = 0

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        spinning = True

        def spin() -> None:
            nonlocal rounds
            rounds += 1
            if spinning:
                loop.call_soon(spin)

        loop.call_soon(spin)
        try:
            return await asyncio.wait_for(log.arecord(AuditEntry("busy")), timeout=10)
        finally:
            spinning = False

    try:
        events = asyncio.run(main())
    finally:
        log.close()
    assert [e.event_type for e in events] == ["busy"]
    assert rounds > 0


def test_a_write_alone_on_an_idle_loop_is_committed_without_waiting_for_others() -> None:
    store = MemoryStore()
    batches: list[int] = []
    log = AuditLog(store, ManualClock(), on_batch=lambda size, _s: batches.append(size))

    async def main() -> None:
        for i in range(3):  # one after the other: each finds the loop idle
            await log.arecord(AuditEntry(f"e{i}"))

    try:
        asyncio.run(main())
    finally:
        log.close()
    assert batches == [1, 1, 1]
