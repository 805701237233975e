"""A database that goes back in time under running brokers (a failover to a standby that
missed the last commits, a restore) hands revocation numbers out again. A broker that had
read past them reloads its revocations instead of skipping the new ones for good, and the
feed answers a reader past them with a snapshot and a smaller cursor. Shown on PostgreSQL
and SQLite, the going back done by hand: the last revocations deleted, the tenant's
counter set back."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.records import RevocationRecord
from tasklease.storage import open_store

START = 1_800_000_000.0


def _rewind(kind: str, url: str, keep: int) -> None:
    """Put the database back to when its last revocation was ``keep``."""
    statements = (
        f"DELETE FROM revocations WHERE seq > {keep}",
        f"UPDATE revocation_seqs SET seq = {keep}",
    )
    if kind == "sqlite":
        with sqlite3.connect(url) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "shared.db")
    return "postgres", str(request.getfixturevalue("pg_url"))


def _revoke(broker: Broker, jti: str) -> None:
    """A token-level revocation, committed as the broker commits one."""
    record = RevocationRecord("token", jti, int(START), START + 3600)

    def unit(tx: object) -> list[object]:
        tx.insert_revocation(record)  # type: ignore[attr-defined]
        return []

    broker.kernel.commit(unit)  # type: ignore[arg-type]


def test_a_broker_reloads_when_the_store_went_back(database: tuple[str, str]) -> None:
    kind, url = database
    ring, clock = KeyRing.generate(), ManualClock(START)
    make: Callable[[], Broker] = lambda: Broker(  # noqa: E731
        Config(), open_store(url), ring, clock=clock, nonce_secret=b"n" * 32
    )
    writer, reader = make(), make()
    _revoke(writer, "jti-1")
    _revoke(writer, "jti-2")
    _revoke(writer, "jti-3")
    reader.refresh_revocations()
    assert reader.kernel.revocations.last_seq == 3
    _rewind(kind, url, keep=1)  # jti-2 and jti-3 are lost with the commits
    _revoke(writer, "jti-4-after")  # numbered 2 again
    _revoke(writer, "jti-5-after")  # and 3
    reader.refresh_revocations()
    index = reader.kernel.revocations
    assert index.last_seq == 3
    for jti in ("jti-4-after", "jti-5-after", "jti-2", "jti-3"):  # what it held stays
        assert ("token", jti) in {(lv, t) for lv, t in _held(index)}, jti
    _revoke(writer, "jti-6-after")  # numbered 4: read on as usual
    assert reader.refresh_revocations() == 1
    records, cursor = reader.revocation_feed(3)
    assert (cursor, [r.target for r in records]) == (4, ["jti-6-after"])
    # A feed reader past the store's last number gets a snapshot and a smaller cursor.
    _rewind(kind, url, keep=1)
    records, cursor = reader.revocation_feed(4)
    assert (cursor, [r.target for r in records]) == (1, ["jti-1"])
    for broker in (writer, reader):
        broker.store.close()


def _held(index: object) -> set[tuple[str, str]]:
    levels: dict[str, dict[str, object]] = index._levels  # type: ignore[attr-defined]
    return {(level, target) for level, entries in levels.items() for target in entries}
