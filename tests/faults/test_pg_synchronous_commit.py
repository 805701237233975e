"""A commit the broker was told is done survives a crash of the PostgreSQL server, on a
server whose default is ``synchronous_commit = off`` (a common tuning: the commit
returns before its WAL is written, and a crash loses the last ones). The broker's
sessions commit with ``synchronous_commit = on`` whatever the server's default or the
URL say, as its SQLite store commits with ``synchronous = FULL``: an acknowledged
revocation must not come back to life, nor an audit event disappear.
"""

from __future__ import annotations

import pgcluster
import psycopg
import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.records import RevocationRecord
from tasklease.storage import open_store

START = 1_800_000_000.0


@pytest.mark.parametrize("in_url", [False, True])
def test_an_acknowledged_commit_survives_a_server_crash(
    own_cluster: pgcluster.Cluster, in_url: bool
) -> None:
    cluster = own_cluster  # fsync off, synchronous_commit off (pgcluster's settings)
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        # The WAL writer flushes asynchronous commits only every 10 s: a crash before
        # then loses them all.
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("SELECT pg_reload_conf()")
    url = cluster.new_database("sync")
    if in_url:
        url += "&options=-c%20synchronous_commit%3Doff"
    store = open_store(url, migrate=True)
    broker = Broker(
        Config(), store, KeyRing.generate(), clock=ManualClock(START), nonce_secret=b"n" * 32
    )
    targets = [f"jti-{n}" for n in range(5)]
    try:
        for target in targets:
            record = RevocationRecord("token", target, int(START), START + 3600)

            def unit(tx: object, record: RevocationRecord = record) -> list[object]:
                tx.insert_revocation(record)  # type: ignore[attr-defined]
                return []

            broker.kernel.commit(unit)  # type: ignore[arg-type]
    finally:
        broker.audit.close()
        store.close()
    cluster.stop("immediate")  # the server crashes: no shutdown checkpoint
    cluster.start()
    with psycopg.connect(url.split("&options=")[0], autocommit=True) as conn:
        kept = {row[0] for row in conn.execute("SELECT target FROM revocations")}
    assert set(targets) <= kept, f"acknowledged revocations lost: {set(targets) - kept}"
