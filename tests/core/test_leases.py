# Would fail if: a broker that stops kept its store leases until they expired (after a
# clean restart no process signed audit checkpoints, swept silent agents or followed the
# federated feeds for up to a lease's length), gave up a lease another process holds, or
# raised when a lease could not be given up.
"""Store leases given up when a broker stops (``Broker.release_leases``; docs/decisions.md
150). Two brokers on one SQLite file stand for the process that stops and the one that
takes over. Their clock stands still, so no lease is ever taken over by expiring."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.auditformat import AuditEntry
from tasklease.core.clock import ManualClock
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import SWEEPER_LEASE
from tasklease.core.peerfeed import FEED_LEASE
from tasklease.core.store import AgentSession, Store
from tasklease.core.transparency import CHECKPOINT_LEASE
from tasklease.storage import MemoryStore, open_store

START = 1_800_000_000.0
LEASES = (CHECKPOINT_LEASE, SWEEPER_LEASE, FEED_LEASE)


def _processes(tmp_path: Path, make_broker: Any) -> tuple[Any, Any, ManualClock]:
    clock, ring = ManualClock(START), KeyRing.generate()
    url = f"sqlite://{tmp_path / 'shared.db'}"
    first = make_broker(store=open_store(url), clock=clock, keyring=ring)
    second = make_broker(store=open_store(url), clock=clock, keyring=ring)
    return first, second, clock


def _events(broker: Any, n: int) -> None:
    broker.kernel.record(*[AuditEntry("test_event", detail=str(i)) for i in range(n)])


def _silent(store: Store, n: int, since: float) -> str:
    """A supervised agent's session whose last heartbeat was at ``since``."""
    agent_id = f"spiffe://tasklease.local/agent/o/t/{n}"
    with store.write() as tx:
        tx.put_agent_session(
            AgentSession(agent_id, "admin", True, since, 0, "active", since + 9999)
        )
    return agent_id


def _free(store: Store, name: str, now: float) -> bool:
    """Whether a third holder could take lease ``name`` now (and so it leaves it be)."""
    with store.write() as tx:
        if not tx.acquire_lease(name, "third", now, now + 1):
            return False
        tx.release_lease(name, "third")
    return True


def test_the_checkpoint_lease_is_taken_over_at_once(tmp_path: Path, make_broker: Any) -> None:
    first, second, _ = _processes(tmp_path, make_broker)
    _events(first, 3)
    assert first.transparency.sign_now().size == 3
    _events(second, 2)
    assert second.transparency.sign_now() is None  # first holds the lease
    first.release_leases()  # first stops, after its final checkpoint
    signed = second.transparency.sign_now()
    assert signed is not None and signed.size == 5


def test_the_sweeper_lease_is_taken_over_at_once(tmp_path: Path, make_broker: Any) -> None:
    first, second, clock = _processes(tmp_path, make_broker)
    gone = _silent(first.store, 1, clock.now())
    clock.advance(100)  # silent past 3 x 30 s
    assert first.sweep_silent_agents() == [gone]
    later = _silent(first.store, 2, clock.now() - 100)
    assert second.sweep_silent_agents() == []  # first holds the lease
    first.release_leases()
    assert second.sweep_silent_agents() == [later]


def test_the_feed_lease_is_taken_over_at_once(tmp_path: Path, make_broker: Any) -> None:
    first, second, _ = _processes(tmp_path, make_broker)
    assert first.hold_feed_lease(5)
    assert not second.hold_feed_lease(5)
    first.release_leases()
    assert second.hold_feed_lease(5)


def test_a_broker_gives_up_only_the_leases_it_holds(tmp_path: Path, make_broker: Any) -> None:
    first, second, clock = _processes(tmp_path, make_broker)
    _events(first, 1)
    assert first.transparency.sign_now() is not None
    assert first.sweep_silent_agents() == []
    assert first.hold_feed_lease(5)
    # Another process stopping leaves them first's.
    assert second.transparency.sign_now() is None
    assert second.sweep_silent_agents() == []
    assert not second.hold_feed_lease(5)
    second.release_leases()
    assert not [name for name in LEASES if _free(first.store, name, clock.now())]
    # A lease that expired and was taken over is the new holder's: first, stopping
    # later, does not give it up.
    clock.advance(61)
    assert second.hold_feed_lease(5)
    first.release_leases()
    assert not _free(first.store, FEED_LEASE, clock.now())
    assert _free(first.store, SWEEPER_LEASE, clock.now())


class _NoRelease(MemoryStore):
    """A MemoryStore on which no lease can be given up while ``refusing`` is set (a
    database that went away)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = True

    @contextmanager
    def write(self) -> Iterator[Any]:
        with super().write() as tx:
            yield _RefusingTx(tx) if self.refusing else tx


class _RefusingTx:
    def __init__(self, tx: Any) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def release_lease(self, name: str, holder: str) -> bool:
        raise OSError("database is locked")


def test_a_lease_that_cannot_be_given_up_is_logged_and_expires(
    make_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(START)
    broker = make_broker(store=_NoRelease(), clock=clock)
    _events(broker, 1)
    assert broker.transparency.sign_now() is not None
    assert broker.hold_feed_lease(5)
    with caplog.at_level(logging.WARNING, logger="tasklease.broker"):
        broker.release_leases()  # does not raise
    warned = [r.getMessage() for r in caplog.records if r.name == "tasklease.broker"]
    assert len(warned) == 2
    assert "audit checkpoint lease was not given up (OSError: database is locked)" in warned[0]
    assert "federation feed lease" in warned[1]
    broker.store.refusing = False
    assert not _free(broker.store, CHECKPOINT_LEASE, clock.now())
    assert _free(broker.store, FEED_LEASE, clock.now() + 5)  # as before: once it expires
