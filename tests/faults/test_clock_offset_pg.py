# Would fail if: a replica whose clock runs ahead of the others (here, of the PostgreSQL
# server every replica shares) gave no sign of it before tokens started being refused.
"""The drift signal between replicas (core.clockoffset): a real replica on PostgreSQL whose
wall clock runs 20 s ahead (libfaketime) reports it in ``tasklease_clock_offset_seconds``
and warns, since 20 s is beyond half of the 30 s ``clock_skew``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pgcluster
import pytest
from e2e_support import RunningBroker, metrics_url, stop_broker
from faults_support import FakeClock
from pg_e2e import migrate, start_replica

pytestmark = pytest.mark.slow

AHEAD = 20


def _offset(broker: RunningBroker) -> float | None:
    text = httpx.get(metrics_url(broker), timeout=10).text
    found = re.search(r"^tasklease_clock_offset_seconds (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else None


def test_a_replica_whose_clock_runs_ahead_says_by_how_much(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    url = cluster.new_database("offset")
    migrate(url, tmp_path)
    fake_clock.set(AHEAD)
    broker = start_replica(url, tmp_path, fake_clock.env())
    try:
        deadline = time.monotonic() + 20
        while (offset := _offset(broker)) is None or abs(offset - AHEAD) > 3:
            assert time.monotonic() < deadline, f"no offset near {AHEAD} s: {offset}"
            time.sleep(0.25)
        assert "ahead of the database server's" in broker.log()
        # Back in step: the gauge follows at the next tick, and the warnings stop.
        fake_clock.set(0)
        deadline = time.monotonic() + 20
        while abs(_offset(broker) or AHEAD) > 3:
            assert time.monotonic() < deadline, "the offset never came back near 0"
            time.sleep(0.25)
    finally:
        stop_broker(broker)
