"""The store watch (LISTEN/NOTIFY) and the broker's freshness bound, in process."""

from __future__ import annotations

import threading
import time

import nacl.signing
import pytest
from pg_e2e import count_backends

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.store import RevocationRecord
from tasklease.storage._pg_watch import CHECK_IN
from tasklease.storage.postgres import PostgresStore


def _revoke(store: PostgresStore, target: str) -> None:
    with store.write() as tx:
        tx.audit_head()
        tx.insert_revocation(RevocationRecord("token", target, 1, time.time() + 600))


def test_watch_reports_other_stores_commits_with_their_commit_time(pg_url: str) -> None:
    mine, other = PostgresStore(pg_url), PostgresStore(pg_url)
    calls: list[float | None] = []
    changed = threading.Event()

    def on_change(committed_at: float | None) -> None:
        calls.append(committed_at)
        if committed_at is not None:
            changed.set()

    watch = mine.start_watch(on_change, interval=0.2)
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:  # the (re)connect call
            time.sleep(0.01)
        before = time.time()
        _revoke(other, "jti-1")
        assert changed.wait(5)
        stamped = next(c for c in calls if c is not None)
        assert before <= stamped <= time.time()
        calls.clear()
        _revoke(mine, "jti-2")  # our own commit: a refresh, no propagation figure
        time.sleep(0.5)
        assert calls and all(c is None for c in calls)  # check-ins and our own notify
    finally:
        watch.close()
        mine.close()
        other.close()


def test_broker_follows_the_watch_and_fails_closed_when_it_goes_quiet(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    config = Config(revocation_staleness_bound=5.0)
    broker = Broker(config, store, KeyRing(nacl.signing.SigningKey.generate()))
    other = PostgresStore(pg_url)
    now = [1000.0]
    broker._monotonic = lambda: now[0]
    try:
        assert broker.health()["revocations_current"] is True
        stop = broker.watch_revocations()
        assert stop is not None
        assert broker.watch_revocations() is None  # one watch per broker
        _revoke(other, "jti-remote")
        deadline = time.monotonic() + 5
        while "jti-remote" not in broker.revocations._levels["token"]:
            assert time.monotonic() < deadline, "revocation not propagated"
            time.sleep(0.005)
        # Check-ins keep the deadline ahead; when they stop, validation fails closed.
        now[0] += 60
        with pytest.raises(Unavailable):
            broker.validate("not-even-a-token")
        health = broker.health()
        assert health["status"] == "degraded" and health["revocations_current"] is False
        deadline = time.monotonic() + 5  # the next check-in (every second) restores it
        while broker.health()["revocations_current"] is False:
            assert time.monotonic() < deadline, "no check-in"
            time.sleep(0.02)
        stop()
        now[0] += 3600  # without a watch, no bound applies (SQLite, memory)
        assert broker.health()["revocations_current"] is True
    finally:
        store.close()
        other.close()


def _listeners(url: str) -> int:
    # A LISTEN connection's last statement is its LISTEN or a check-in.
    return count_backends(url, f"query LIKE 'LISTEN%' OR query = '{CHECK_IN}'")


def test_tenant_views_share_one_watch_and_each_gets_its_tenants_revocations(pg_url: str) -> None:
    # Would fail if: each tenant's broker opened a LISTEN connection of its own (100
    # tenants, 100 connections per process), or a notification reached only one of them.
    store, other = PostgresStore(pg_url), PostgresStore(pg_url)
    config = Config(revocation_staleness_bound=5.0)
    brokers = {
        name: Broker(config, store.for_tenant(name), KeyRing(nacl.signing.SigningKey.generate()))
        for name in ("acme", "globex", "initech")
    }
    stops = [broker.watch_revocations() for broker in brokers.values()]
    try:
        assert all(stop is not None for stop in stops)
        deadline = time.monotonic() + 5
        while _listeners(pg_url) != 1:
            assert time.monotonic() < deadline, "expected one LISTEN connection"
            time.sleep(0.05)
        for name in brokers:
            _revoke(other.for_tenant(name), f"jti-{name}")
        for name, broker in brokers.items():
            deadline = time.monotonic() + 5
            while f"jti-{name}" not in broker.revocations._levels["token"]:
                assert time.monotonic() < deadline, f"{name} missed its revocation"
                time.sleep(0.005)
            mine = set(broker.revocations._levels["token"])
            assert mine == {f"jti-{name}"}  # never another tenant's
        # Closing two followers keeps the third's watch; closing the last stops it.
        for stop in stops[:2]:
            stop()  # type: ignore[misc]
        _revoke(other.for_tenant("initech"), "jti-late")
        deadline = time.monotonic() + 5
        while "jti-late" not in brokers["initech"].revocations._levels["token"]:
            assert time.monotonic() < deadline, "the last follower lost its watch"
            time.sleep(0.005)
        stops[2]()  # type: ignore[misc]
        deadline = time.monotonic() + 5
        while _listeners(pg_url) != 0:
            assert time.monotonic() < deadline, "the watch outlived its followers"
            time.sleep(0.05)
    finally:
        for broker in brokers.values():
            broker.audit.close()
        store.close()
        other.close()
