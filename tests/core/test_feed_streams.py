"""The revocation streams each reader holds in a process, and the process in all
(core.feedstreams; docs/decisions.md 140): the counts stay exact, and a stream over a cap
is refused as every refusal is, with one audit event."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tasklease.core.errors import RateLimited
from tasklease.core.feedstreams import RETRY_AFTER, Full, Slot, StreamSlots, reader_of
from tasklease.core.kernel import RequestContext
from tasklease.core.records import AuditQuery

CTX = RequestContext(request_id="req-feed", path="/v1/revocations/stream")

A = ("tasklease", "app:a")
B = ("tasklease", "app:b")


def test_a_reader_holds_at_most_its_cap_and_the_process_at_most_its_own() -> None:
    slots = StreamSlots(2, 3)
    a1, a2 = slots.take(A), slots.take(A)
    assert isinstance(a1, Slot) and isinstance(a2, Slot)
    assert slots.take(A) == Full("reader", 2, 2, 2)
    b1 = slots.take(B)
    assert isinstance(b1, Slot)
    # B holds one of its two, but the process holds its three.
    assert slots.take(B) == Full("process", 3, 1, 3)
    a1.release()
    assert isinstance(slots.take(B), Slot)
    assert slots.total == 3


def test_a_slot_given_back_twice_counts_once_and_a_reader_at_zero_is_forgotten() -> None:
    seen: list[int] = []
    slots = StreamSlots(1, 5, observe=seen.append)
    slot = slots.take(A)
    assert isinstance(slot, Slot)
    slot.release()
    slot.release()
    assert slot.released
    assert slots.total == 0
    assert slots.held(A) == 0
    assert A not in slots._held  # the table holds the readers of open streams only
    assert seen == [1, 0]
    assert isinstance(slots.take(A), Slot)


@pytest.mark.parametrize(("per_reader", "per_process"), [(0, 1), (1, 0), (-1, 5)])
def test_a_cap_below_one_is_refused(per_reader: int, per_process: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StreamSlots(per_reader, per_process)


def test_the_counts_stay_exact_under_threads() -> None:
    slots = StreamSlots(3, 10)
    readers = [("t", f"app:{n}") for n in range(6)]
    most = 0
    lock = threading.Lock()

    def churn(reader: tuple[str, str]) -> None:
        nonlocal most
        for _ in range(2000):
            taken = slots.take(reader)
            with lock:
                most = max(most, slots.total)
            if isinstance(taken, Slot):
                assert slots.held(reader) <= 3
                taken.release()
                taken.release()

    threads = [threading.Thread(target=churn, args=(r,)) for r in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert slots.total == 0
    assert slots._held == {}
    assert most <= 10


def test_readers_are_principals_of_one_tenant(make_broker: Any, kit: Any) -> None:
    broker = make_broker()
    first, second = kit.app(broker, "app-one"), kit.app(broker, "app-one")
    # Two tokens of one app are one reader; another app, or the admin, another.
    assert first.claims.jti != second.claims.jti
    assert reader_of(first.claims) == reader_of(second.claims)
    assert reader_of(kit.app(broker, "app-two").claims) != reader_of(first.claims)
    assert reader_of(kit.admin(broker).claims) == (broker.config.issuer, "admin")


def test_a_stream_over_the_cap_is_refused_with_one_audit_event(make_broker: Any, kit: Any) -> None:
    broker = make_broker(feed_streams_per_reader=1, feed_streams_per_process=5)
    app = kit.app(broker, "app-feed").claims

    async def run() -> tuple[Slot, RateLimited]:
        slot = await broker.open_feed_stream(app, CTX)
        with broker.refusals.charging("192.0.2.8"), pytest.raises(RateLimited) as refused:
            await broker.open_feed_stream(app, CTX)
        return slot, refused.value

    slot, error = asyncio.run(run())
    assert error.retry_after == RETRY_AFTER
    assert error.denial_id is not None and error.denial_id.startswith("den_")
    events, _ = broker.audit_events(AuditQuery(event_type="feed_stream_denied"))
    [event] = events
    assert event.outcome == "denied"
    assert event.agent_id == "app:app-feed"
    assert event.detail.endswith(f"denial={error.denial_id}")
    assert "feed_streams_per_reader is 1" in event.detail
    # Like every audited refusal, it spent one of the client's budget of refusals.
    assert len(broker.refusals) == 1
    assert broker.metrics.feed_streams._value.get() == 1
    slot.release()
    assert broker.metrics.feed_streams._value.get() == 0
    assert broker.stream_slots.total == 0
