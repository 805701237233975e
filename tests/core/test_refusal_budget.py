"""Each client's budget of audited refusals (core.refusalbudget), with time driven by hand."""

from __future__ import annotations

import asyncio

import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import RateLimited, Unauthorized
from tasklease.core.kernel import RequestContext, new_denial_id
from tasklease.core.keys import KeyRing
from tasklease.core.records import AuditQuery
from tasklease.core.refusalbudget import RefusalBudget
from tasklease.storage import open_store


class Elapsed:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ids() -> str:
    return "den_" + "0" * 16


def test_a_client_is_served_until_its_refusals_spend_the_burst() -> None:
    elapsed = Elapsed()
    budget = RefusalBudget(1.0, 3, monotonic=elapsed)
    for _ in range(3):
        assert budget.check("192.0.2.1", _ids) is None
        budget.spend("192.0.2.1")
    verdict = budget.check("192.0.2.1", new_denial_id)
    assert verdict is not None and verdict.first
    # The run's event spent a token too: two seconds until a whole one is back.
    assert verdict.retry_after == 2
    again = budget.check("192.0.2.1", new_denial_id)
    assert again is not None and not again.first and again.run is verdict.run
    # Another client has its own bucket.
    assert budget.check("192.0.2.2", _ids) is None


def test_a_refilled_bucket_ends_the_run_and_a_new_run_has_a_new_event() -> None:
    elapsed = Elapsed()
    budget = RefusalBudget(0.5, 1, monotonic=elapsed)
    budget.spend("c")
    first = budget.check("c", new_denial_id)
    assert first is not None and first.first and first.retry_after == 4
    elapsed.now += 3.9
    assert budget.check("c", new_denial_id) is not None  # not a whole token yet
    elapsed.now += 0.1
    assert budget.check("c", _ids) is None
    budget.spend("c")
    second = budget.check("c", new_denial_id)
    assert second is not None and second.first
    assert second.run.denial_id != first.run.denial_id


def test_refusals_charge_the_client_being_served_and_nobody_otherwise() -> None:
    budget = RefusalBudget(1.0, 2, monotonic=Elapsed())
    new_denial_id()  # no request being served: nobody is charged
    assert len(budget) == 0
    with budget.charging("c"):
        new_denial_id()
        new_denial_id()
    assert budget.check("c", new_denial_id) is not None


def test_a_bucket_owes_at_most_one_burst_and_a_clock_stepping_back_refills_nothing() -> None:
    elapsed = Elapsed()
    budget = RefusalBudget(1.0, 2, monotonic=elapsed)
    for _ in range(50):  # requests under way when the bucket ran out
        budget.spend("c")
    elapsed.now -= 1000
    verdict = budget.check("c", new_denial_id)
    assert verdict is not None and verdict.retry_after == 3  # from -2, not from -48


def test_the_table_is_bounded() -> None:
    budget = RefusalBudget(1.0, 1, monotonic=Elapsed(), max_clients=3)
    for n in range(10):
        budget.spend(f"c{n}")
    assert len(budget) == 3


def _broker(clock: ManualClock) -> Broker:
    config = Config(refusal_rate=1.0, refusal_burst=2)
    return Broker(
        config, open_store("memory://"), KeyRing.generate(), clock=clock, nonce_secret=b"n" * 32
    )


def test_a_run_of_refusals_is_audited_once_and_each_names_its_event() -> None:
    clock = ManualClock(1_700_000_000.0)
    broker = _broker(clock)

    async def run() -> list[RateLimited | None]:
        with broker.refusals.charging("198.51.100.9"):
            for _ in range(2):
                with pytest.raises(Unauthorized):
                    broker.authenticate("Bearer x", RequestContext(request_id="r"))
        return [await broker.admit_client("198.51.100.9", request_id="r") for _ in range(5)]

    answers = asyncio.run(run())
    assert all(isinstance(a, RateLimited) for a in answers)
    ids = {a.denial_id for a in answers if a is not None}
    assert len(ids) == 1
    events, _ = broker.audit_events(AuditQuery(event_type="refusals_rate_limited"))
    [event] = events
    assert event.outcome == "denied"
    assert event.detail.endswith(f"denial={ids.pop()}")
    assert "198.51.100.9" in event.detail
    clock.advance(2.0)
    assert asyncio.run(broker.admit_client("198.51.100.9")) is None
