"""Migration 0021 on a database written at schema version 20 whose revocation counters
fell behind the entries stored (what version 20 could leave on PostgreSQL when a replica
of version 19 stored revocations while it ran): each tenant continues above its highest
stored seq, on SQLite and PostgreSQL. And on PostgreSQL, version 20 itself, run while a
version 19 replica is inside a transaction that stores revocations, waits for it and
counts its entries (tests/storage/test_revocation_seq_migration.py tests the rest of 20).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.old_schema import migrations, store_at

from tasklease.core.records import RevocationRecord
from tasklease.core.store import Store

NOW = 1_800_000_000
LATER = NOW + 3600.0
BEFORE = 20

_REVOKE = (
    "INSERT INTO revocations (tenant_id, seq, level, target, revoked_at, expires_at)"
    " VALUES (?, ?, 'token', ?, ?, ?)"
)
# At version 20: default holds seqs 1-3 but its counter says 2; acme holds 4 and has no
# counter at all; zeta's counter (7) is ahead of its entries and stays.
_ROWS: list[tuple[str, tuple[object, ...]]] = [
    (_REVOKE, ("default", 1, "a", NOW, LATER)),
    (_REVOKE, ("default", 2, "b", NOW, LATER)),
    (_REVOKE, ("default", 3, "c", NOW, LATER)),
    (_REVOKE, ("acme", 4, "x", NOW, LATER)),
    (_REVOKE, ("zeta", 5, "z", NOW, LATER)),
    ("DELETE FROM revocation_seqs", ()),
    ("INSERT INTO revocation_seqs (tenant_id, seq) VALUES (?, ?)", ("default", 2)),
    ("INSERT INTO revocation_seqs (tenant_id, seq) VALUES (?, ?)", ("zeta", 7)),
]


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_at(request.param, tmp_path, BEFORE, lambda _backend: _ROWS)


def _revoke(store: Store, target: str) -> int:
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("token", target, NOW, LATER))
    return store.revocation_high_water()


def test_each_tenant_continues_above_its_highest_stored_seq(migrated: Store) -> None:
    acme, zeta = migrated.for_tenant("acme"), migrated.for_tenant("zeta")
    assert migrated.revocation_high_water() == 3
    assert acme.revocation_high_water() == 4
    assert zeta.revocation_high_water() == 7
    assert _revoke(migrated, "d") == 4
    assert _revoke(acme, "y") == 5
    assert _revoke(zeta, "w") == 8
    assert [(r.target, r.seq) for r in migrated.revocations_since(2)] == [("c", 3), ("d", 4)]


def test_version_20_waits_for_a_version_19_replica_storing_revocations() -> None:
    """A version 19 replica stores two revocations in one transaction (an app's removal
    does), drawing both from the shared sequence, while version 20 runs: the migration
    waits for it, and the tenant's next revocation gets the next number."""
    import pgcluster
    import psycopg

    from tasklease.storage.postgres import PostgresStore

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    url = cluster.new_database("seqrace")
    insert = (
        "INSERT INTO revocations (tenant_id, level, target, revoked_at, expires_at)"
        " VALUES ('default', 'token', %s, %s, %s)"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
        for version, name, sql in migrations("postgres", 19):
            conn.execute(sql.encode("utf-8"))
            conn.execute("INSERT INTO schema_version VALUES (%s, %s, %s)", (version, name, NOW))
        for target in ("a", "b", "c"):
            conn.execute(insert, (target, NOW, LATER))
    replica = psycopg.connect(url, autocommit=True)
    outcome: dict[str, object] = {}

    (twenty,) = [sql for version, _, sql in migrations("postgres", 20) if version == 20]

    def migrate() -> None:
        """Version 20 alone, as ``PostgresStore.migrate`` applies it: one transaction."""
        try:
            with psycopg.connect(url) as conn:
                conn.execute(twenty.encode("utf-8"))
                conn.execute("INSERT INTO schema_version VALUES (20, 'seqs', %s)", (NOW,))
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    try:
        replica.execute("BEGIN")
        replica.execute(insert, ("app-1", NOW, LATER))
        runner = threading.Thread(target=migrate)
        runner.start()
        with psycopg.connect(url, autocommit=True) as watch:
            waited = False
            for _ in range(400):
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if row is not None and row[0]:
                    waited = True
                    break
                time.sleep(0.025)
        assert waited, "the migration never waited for the replica's transaction"
        replica.execute(insert, ("app-1-ancestor", NOW, LATER))
        replica.execute("COMMIT")
        runner.join(60)
    finally:
        replica.close()
    assert "error" not in outcome, outcome
    with psycopg.connect(url, autocommit=True) as conn:
        counters = conn.execute("SELECT tenant_id, seq FROM revocation_seqs").fetchall()
    assert counters == [("default", 5)]
    with PostgresStore(url) as store:
        assert store.revocation_high_water() == 5
        assert _revoke(store, "d") == 6
