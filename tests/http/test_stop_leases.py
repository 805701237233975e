# Would fail if: the application's shutdown left its background jobs' store leases to
# expire, or gave them up while a job's round was still under way (that round then took
# its lease again, and the process taking over waited for it to expire all the same).
"""What a broker does with its store leases when it stops: its background jobs end, each
after the round under way, then it signs its last checkpoint and gives the leases up, so
the process that takes over does not wait for them to expire (docs/decisions.md 150).
In process, over a memory store, with a clock that stands still: no lease expires."""

from __future__ import annotations

import threading
import time

import pytest
from starlette.testclient import TestClient

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import SWEEPER_LEASE, Liveness
from tasklease.core.passwords import hash_secret
from tasklease.core.transparency import CHECKPOINT_LEASE
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

START = 1_800_000_000.0


def test_the_leases_are_given_up_after_the_jobs_last_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    broker = Broker(
        Config(admin_secret_hash=hash_secret("s" * 40), heartbeat_interval=1),
        store,
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )
    sweeping, swept = threading.Event(), threading.Event()
    sweep = Liveness.sweep_silent_agents

    def slow_sweep(self: Liveness, holder: str) -> list[str]:
        if self is not broker._liveness:
            # Another test's broker still running in this process (the patch is on the
            # class): its rounds are not this broker's.
            return sweep(self, holder)
        sweeping.set()
        time.sleep(0.5)  # the broker stops while this round is under way
        try:
            return sweep(self, holder)
        finally:
            swept.set()

    monkeypatch.setattr(Liveness, "sweep_silent_agents", slow_sweep)
    with TestClient(create_app(broker)):
        assert sweeping.wait(10), "the sweeper never ran"
    assert swept.is_set()
    for name in (CHECKPOINT_LEASE, SWEEPER_LEASE):
        with store.write() as tx:
            assert tx.acquire_lease(name, "next process", START, START + 1), name
