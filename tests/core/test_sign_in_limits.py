"""The sign-in limits (core.clientlimits, docs/decisions.md 148), with time driven by hand:
the refusal budget's runs, for a limit every served attempt spends."""

from __future__ import annotations

import asyncio

import pytest

from tasklease.core.auditformat import AuditEntry
from tasklease.core.broker import Broker
from tasklease.core.clientlimits import ADMIN_SIGN_IN, REFUSALS, ClientLimit
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import RateLimited, Unavailable
from tasklease.core.kernel import new_denial_id
from tasklease.core.keys import KeyRing
from tasklease.core.records import AuditQuery
from tasklease.storage import open_store


class Elapsed:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_every_attempt_served_takes_a_token_and_a_refill_begins_a_new_run() -> None:
    elapsed = Elapsed()
    limit = ClientLimit(0.5, 2, ADMIN_SIGN_IN, monotonic=elapsed)
    assert limit.check("c", new_denial_id) is None
    assert limit.check("c", new_denial_id) is None
    first = limit.check("c", new_denial_id)
    assert first is not None and first.first
    # The run's event spent a token too: from -1, four seconds until a whole one.
    assert first.retry_after == 4
    again = limit.check("c", new_denial_id)
    assert again is not None and not again.first and again.run is first.run
    assert limit.check("d", new_denial_id) is None  # another client, its own bucket
    elapsed.now += 4.0
    assert limit.check("c", new_denial_id) is None  # served: the run ends
    second = limit.check("c", new_denial_id)
    assert second is not None and second.first
    assert second.run.denial_id != first.run.denial_id


def test_the_refusal_budget_is_served_without_spending() -> None:
    budget = ClientLimit(1.0, 1, REFUSALS, monotonic=Elapsed())
    for _ in range(5):
        assert budget.check("c", new_denial_id) is None


def _broker(clock: ManualClock) -> Broker:
    config = Config(admin_auth_rate=0.5, admin_auth_burst=2, app_auth_rate=0.5, app_auth_burst=1)
    return Broker(
        config, open_store("memory://"), KeyRing.generate(), clock=clock, nonce_secret=b"n" * 32
    )


def test_a_run_of_sign_in_refusals_is_audited_once_and_spends_one_refusal() -> None:
    clock = ManualClock(1_700_000_000.0)
    broker = _broker(clock)
    client = "203.0.113.4"

    async def run() -> list[RateLimited | None]:
        with broker.refusals.charging(client):
            return [await broker.admit_sign_in("admin", client, request_id="r") for _ in range(6)]

    answers = asyncio.run(run())
    assert answers[:2] == [None, None]
    refused = [a for a in answers[2:] if a is not None]
    assert len(refused) == 4
    [denial_id] = {a.denial_id for a in refused}
    assert all(a.retry_after == 4 for a in refused)
    [event] = broker.audit_events(AuditQuery(event_type="admin_auth_rate_limited"))[0]
    assert event.outcome == "denied" and event.request_id == "r"
    assert event.detail == (
        f"client {client} spent the admin sign-in limit (2 at 0.5/s): its sign-ins with the "
        "admin secret or as an operator (API and console) are refused, under this one "
        f"event, until it refills | denial={denial_id}"
    )
    # One audited refusal, one token of the client's budget of refusals: not four.
    assert broker.refusals.check(client, new_denial_id) is None
    assert broker.refusals._buckets[client].tokens == broker.config.refusal_burst - 1
    # The app sign-in limit is another: not spent by the admin's.
    assert asyncio.run(broker.admit_sign_in("app", client)) is None
    refused_app = asyncio.run(broker.admit_sign_in("app", client))
    assert refused_app is not None and refused_app.denial_id != denial_id
    [app_event] = broker.audit_events(AuditQuery(event_type="app_auth_rate_limited"))[0]
    assert app_event.detail.endswith(f"denial={refused_app.denial_id}")
    assert "the app sign-in limit (1 at 0.5/s)" in app_event.detail

    clock.advance(4.0)
    assert asyncio.run(broker.admit_sign_in("admin", client)) is None
    later = asyncio.run(broker.admit_sign_in("admin", client))
    assert later is not None and later.denial_id != denial_id
    events, _ = broker.audit_events(AuditQuery(event_type="admin_auth_rate_limited"))
    assert len(events) == 2


def test_a_run_whose_event_cannot_be_written_fails_closed_and_begins_again() -> None:
    written: list[AuditEntry] = []
    failing = True

    async def deny(entry: AuditEntry, denial_id: str) -> None:
        if failing:
            raise Unavailable("the audit log is unavailable")
        written.append(entry)

    limit = ClientLimit(
        0.5, 1, ADMIN_SIGN_IN, monotonic=Elapsed(), deny=deny, new_denial_id=new_denial_id
    )

    async def run() -> RateLimited | None:
        return await limit.admit("c")

    assert asyncio.run(run()) is None
    with pytest.raises(Unavailable):
        asyncio.run(run())
    failing = False
    refused = asyncio.run(run())
    assert refused is not None and refused.denial_id
    assert len(written) == 1
