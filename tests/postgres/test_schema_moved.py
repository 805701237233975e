"""A running replica whose database is migrated past what its code knows (a rolling
upgrade's next release ran ``tasklease db migrate``) stops serving: every read and write
fails closed with 503, its index goes stale and it is no longer ready."""

from __future__ import annotations

import threading
import time

import nacl.signing
import psycopg
import pytest

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.storage._sql import Migration
from tasklease.storage.postgres import PostgresStore


def _wait_refused(store: PostgresStore, seconds: float) -> Unavailable:
    deadline = time.monotonic() + seconds
    while True:
        try:
            store.revocation_high_water()
        except Unavailable as exc:
            return exc
        assert time.monotonic() < deadline, "the store still serves a newer schema"
        time.sleep(0.02)


def test_a_running_broker_stops_serving_once_the_schema_is_newer(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    broker = Broker(Config(), store, KeyRing(nacl.signing.SigningKey.generate()))
    stop = broker.watch_revocations()
    assert stop is not None
    try:
        assert broker.health()["revocations_current"] is True
        known = PostgresStore.known_schema_version()
        # What a newer release's migration leaves behind (without its notification: the
        # watch's check-ins, every second, find it too).
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_version VALUES (%s, 'from_the_future', 0)", (known + 1,)
            )
        refused = _wait_refused(store, 3)
        assert f"schema version {known + 1} is newer" in (refused.reason or "")
        with pytest.raises(Unavailable), store.write() as tx:
            tx.audit_head()
        with pytest.raises(Unavailable):  # tenant views share it
            store.for_tenant("other").revocation_high_water()
        # The check-ins stop confirming the index: validation fails closed too.
        broker._monotonic = lambda: time.monotonic() + 60
        with pytest.raises(Unavailable):
            broker.validate("not-even-a-token")
    finally:
        stop()
        store.close()


def test_a_migration_tells_running_replicas_at_once(pg_url: str) -> None:
    running, migrating = PostgresStore(pg_url), PostgresStore(pg_url)
    listening = threading.Event()  # its first call comes once it LISTENs
    watch = running.start_watch(lambda _: listening.set(), interval=60.0)  # no check-in
    try:
        assert listening.wait(5)
        known = PostgresStore.known_schema_version()
        future = Migration(known + 1, "from_the_future", "SELECT 1")
        with migrating._connection() as conn:
            assert migrating._apply(conn, future, known + 1)
        _wait_refused(running, 1)
    finally:
        watch.close()
        running.close()
        migrating.close()
