"""This process's clock against the database server's (core.clockoffset): the gauge, the
warning past half of ``clock_skew``, and nothing measured where the store has no clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tasklease.core.clock import ManualClock
from tasklease.core.clockoffset import measure_offset
from tasklease.core.metrics import Metrics
from tasklease.storage import MemoryStore

NOW = 1_800_000_000.0


def _gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("tasklease_clock_offset_seconds")


@pytest.mark.parametrize(
    ("server", "offset", "warned"), [(NOW - 12, 12, False), (NOW + 16, -16, True)]
)
def test_the_offset_is_this_clock_minus_the_servers(
    caplog: pytest.LogCaptureFixture, server: float, offset: float, warned: bool
) -> None:
    metrics = Metrics()
    with caplog.at_level(logging.WARNING, logger="tasklease.broker"):
        got = measure_offset(ManualClock(NOW), lambda: server, metrics, skew=30)
    assert got == offset and _gauge(metrics) == offset
    said = [r.getMessage() for r in caplog.records if "database server's" in r.getMessage()]
    assert bool(said) is warned
    if warned:
        assert "16.0 s behind the database server's" in said[0]


def test_a_store_without_a_clock_measures_nothing() -> None:
    metrics = Metrics()
    assert measure_offset(ManualClock(NOW), MemoryStore().server_time, metrics, skew=30) is None
    assert not _gauge(metrics)


class _AheadStore(MemoryStore):
    """A store whose server's clock is 40 s behind this process's."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._clock = clock

    def server_time(self) -> float | None:
        return self._clock.now() - 40


def test_each_housekeeping_prune_measures_it(make_broker: Any) -> None:
    clock = ManualClock(NOW)
    broker = make_broker(clock=clock, store=_AheadStore(clock))
    broker.prune()
    assert broker.metrics.registry.get_sample_value("tasklease_clock_offset_seconds") == 40
