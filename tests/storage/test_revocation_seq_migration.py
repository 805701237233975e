"""Migration 0020 on a database written at schema version 19, on SQLite and PostgreSQL.

Before it, one sequence numbered the revocations of every tenant, so the gaps in a
tenant's feed counted the others' revocations. After it, each tenant numbers its own. A
cursor a verifier holds stays valid: entries keep their seq, and every tenant known at
the migration continues above the highest seq ever handed out (a pruned one included).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.old_schema import store_at

from tasklease.core.records import RevocationRecord
from tasklease.core.store import Store

NOW = 1_800_000_000.0
BEFORE = 19  # the schema version the rows are written at
LATER = NOW + 3600

_TENANT = (
    "INSERT INTO tenants (name, trust_domain, status, created_at, created_by)"
    " VALUES (?, ?, 'active', ?, 'admin')"
)
_REVOKE = (
    "INSERT INTO revocations (tenant_id, level, target, revoked_at, expires_at)"
    " VALUES (?, 'token', ?, ?, ?)"
)
# (statement, parameters) at version 19: default revokes a, b and c, acme revokes x, and
# c is pruned, so the highest seq handed out (4) is held by no row.
_ROWS: list[tuple[str, tuple[object, ...]]] = [
    (_TENANT, ("acme", "acme.example", NOW)),
    (_TENANT, ("zeta", "zeta.example", NOW)),
    (_REVOKE, ("default", "a", int(NOW), LATER)),
    (_REVOKE, ("default", "b", int(NOW), LATER)),
    (_REVOKE, ("acme", "x", int(NOW), LATER)),
    (_REVOKE, ("default", "c", int(NOW), LATER)),
    ("DELETE FROM revocations WHERE target = ?", ("c",)),
]


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_at(request.param, tmp_path, BEFORE, lambda _backend: _ROWS)


def _revoke(store: Store, target: str, *, revoked_at: int = int(NOW)) -> None:
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("token", target, revoked_at, LATER))


def _seqs(store: Store, after: int = 0) -> list[tuple[str, int]]:
    return [(r.target, r.seq) for r in store.revocations_since(after)]


def test_entries_keep_their_seq_and_each_tenant_counts_on_from_the_highest(
    migrated: Store,
) -> None:
    acme, zeta = migrated.for_tenant("acme"), migrated.for_tenant("zeta")
    assert _seqs(migrated) == [("a", 1), ("b", 2)]
    assert _seqs(acme) == [("x", 3)]
    # Interleaved writes: each tenant's numbers follow on from 4 without the others'.
    _revoke(migrated, "d")
    _revoke(acme, "y")
    _revoke(migrated, "e")
    _revoke(zeta, "z")
    _revoke(acme, "w")
    assert _seqs(migrated, 2) == [("d", 5), ("e", 6)]
    assert _seqs(acme, 3) == [("y", 5), ("w", 6)]
    assert _seqs(zeta) == [("z", 5)]
    # A widened entry takes the tenant's next number; a tenant unknown at the migration
    # starts from 1 (none of its verifiers can hold a cursor).
    _revoke(migrated, "a", revoked_at=int(NOW) + 60)
    assert _seqs(migrated, 6) == [("a", 7)]
    fresh = migrated.for_tenant("fresh")
    _revoke(fresh, "f")
    assert _seqs(fresh) == [("f", 1)]
