# Would fail if: a broker that stops (SIGTERM, a rolling restart) while it holds revocation
# entries its database lost (a failover to a standby that missed the last commits, a
# restore) went without writing them back, so that they were lost for good: the
# housekeeping round that writes them back comes once a second, and a stop in between
# ended it.
"""What a stopping broker holds that its database lost is written back before it goes
(decision 259's write-back, made once more after the last round of the jobs).

In process, over one SQLite file: another broker revokes, this one reads the entries, the
database goes back in time by hand, this one notices at its next read; then it stops at
once, before its first housekeeping round."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from starlette.testclient import TestClient

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.records import RevocationRecord
from tasklease.core.store import WriteTx
from tasklease.http.app import create_app
from tasklease.storage import open_store

START = 1_800_000_000.0


def _revoke(broker: Broker, target: str) -> None:
    record = RevocationRecord("token", target, int(START), START + 3600)

    def unit(tx: WriteTx) -> list[object]:
        tx.insert_revocation(record)
        return []

    broker.kernel.commit(unit)  # type: ignore[arg-type]
    broker.kernel.apply_revocations([record])


def test_a_broker_that_stops_writes_back_what_its_database_lost(tmp_path: Path) -> None:
    url = str(tmp_path / "shared.db")
    ring, clock = KeyRing.generate(), ManualClock(START)
    writer, stopping = (
        Broker(Config(), open_store(url), ring, clock=clock, nonce_secret=b"n" * 32)
        for _ in range(2)
    )
    _revoke(writer, "jti-1")
    _revoke(writer, "jti-lost")
    stopping.refresh_revocations()
    with sqlite3.connect(url) as conn:  # the database goes back to its first revocation
        conn.execute("DELETE FROM revocations WHERE seq > 1")
        conn.execute("UPDATE revocation_seqs SET seq = 1")
    _revoke(writer, "jti-after")  # numbered 2 again
    stopping.refresh_revocations()  # notices, keeps enforcing jti-lost, notes it lost
    assert [r.target for r in stopping._freshness.lost()] == ["jti-lost"]  # noqa: SLF001
    with TestClient(create_app(stopping)):
        pass  # stopped before the first housekeeping round
    stored = {r.target for r in writer.store.load_revocations(START)}
    assert "jti-lost" in stored, stored
    for broker in (writer, stopping):
        broker.store.close()
