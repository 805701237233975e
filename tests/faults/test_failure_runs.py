"""A run of failures whose cause alternates is still one run.

Seen under faults: with PostgreSQL stopped under a running broker, a background job's
failure alternates between two of our words for the one outage, "storage is unavailable"
(a connection attempt that timed out) and "the database is not answering" (the second
after, when calls fail at once). Each alternation counted as a change of cause: the job
logged a traceback every second or two for as long as the outage lasted, and the line
saying it succeeds again reported one failed round in one second after an outage of
fifteen. A cause already logged in a run is not logged again, and the run's end counts
every round since its first failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from tasklease.core.audit import AuditLog
from tasklease.core.clock import SystemClock
from tasklease.core.errors import Unavailable
from tasklease.http.app import _each
from tasklease.storage.memory import MemoryStore

CAUSES = ("storage is unavailable", "the database is not answering")


@dataclass
class _Tenant:
    tenant: str = "default"


class _Tenancy:
    def brokers(self) -> list[_Tenant]:
        return [_Tenant()]


def test_alternating_causes_of_one_outage_log_each_cause_once_and_the_whole_run_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[BaseException | None] = [Unavailable(CAUSES[i % 2]) for i in range(20)]
    outcomes.append(None)

    def tick(_broker: object) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    run = _each(_Tenancy(), tick)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="tasklease.http"):
        for _ in range(21):
            run()
    failed = [r for r in caplog.records if "background job tick failed" in r.getMessage()]
    assert [r.getMessage().rsplit(": ", 1)[1] for r in failed] == list(CAUSES)
    assert sum(1 for r in caplog.records if r.exc_info) == 2
    ended = [r.getMessage() for r in caplog.records if "succeeds again" in r.getMessage()]
    assert len(ended) == 1
    assert "after 20 failed rounds" in ended[0], ended


def test_the_audit_writes_log_each_cause_of_a_run_once_and_the_whole_run_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = AuditLog(MemoryStore(), SystemClock())
    try:
        with caplog.at_level(logging.INFO, logger="tasklease.core.audit"):
            for i in range(20):
                audit._failed(Unavailable(CAUSES[i % 2]))
            failure = audit.failure()
            assert failure is not None and failure.rounds == 20
            audit._succeeded()
    finally:
        audit.close()
    failed = [r.getMessage() for r in caplog.records if "audit writes fail" in r.getMessage()]
    assert len(failed) == 2, failed
    ended = [r.getMessage() for r in caplog.records if "succeed again" in r.getMessage()]
    assert len(ended) == 1 and "after 20 failed batches" in ended[0], ended
