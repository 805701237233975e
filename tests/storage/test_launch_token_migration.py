"""Migration 0007 on a database written at schema version 6, on SQLite and PostgreSQL.

Launch tokens created before uses were counted keep working as they were meant to: a
single-use token already used stays used; a multi-use token gets the default number of
uses; every existing launch token and agent allows resumption.
"""

from __future__ import annotations

import importlib.resources
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tasklease.core.launch import DEFAULT_MULTI_USES
from tasklease.core.store import Store
from tasklease.storage import SQLiteStore

NOW = 1_800_000_000.0
BEFORE = 6  # the schema version the rows are written at
AGENT = "spiffe://tasklease.local/agent/orch/task/0123456789abcdef"


def _migrations(folder: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of the migrations up to :data:`BEFORE`."""
    found = []
    for entry in (importlib.resources.files("tasklease.storage") / "migrations" / folder).iterdir():
        version, _, rest = entry.name.partition("_")
        if entry.name.endswith(".sql") and int(version) <= BEFORE:
            found.append((int(version), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found)


def _rows(scopes: Callable[[list[str]], object]) -> list[tuple[str, tuple[object, ...]]]:
    launch = (
        "INSERT INTO launch_tokens (token_hash, agent_name, allowed_scope, max_ttl, single_use,"
        " created_at, expires_at, created_by, consumed_at) VALUES ({})"
    )
    agent = (
        "INSERT INTO agents (agent_id, public_key, orch_id, task_id, scope, app_id, client_id,"
        " registered_at, status) VALUES ({})"
    )
    scope = scopes(["read:data:*"])
    return [
        (launch, ("a" * 64, "fresh", scope, 300, True, NOW, NOW + 30, "admin", None)),
        (launch, ("b" * 64, "used", scope, 300, True, NOW, NOW + 30, "admin", NOW + 1)),
        (launch, ("c" * 64, "multi", scope, 300, False, NOW, NOW + 30, "admin", None)),
        (agent, (AGENT, b"k" * 32, "orch", "task", scope, "", "admin", NOW, "active")),
    ]


def _sqlite(tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL) STRICT"
    )
    for version, name, sql in _migrations("sqlite"):
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, NOW))
    for statement, params in _rows(json.dumps):
        conn.execute(statement.format(", ".join("?" * len(params))), params)
    conn.commit()
    conn.close()
    with SQLiteStore(path) as store:
        yield store


def _postgres(tmp_path: Path) -> Iterator[Store]:
    import pgcluster
    import psycopg

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    url = cluster.new_database("mig")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
        for version, name, sql in _migrations("postgres"):
            conn.execute(sql.encode("utf-8"))
            conn.execute("INSERT INTO schema_version VALUES (%s, %s, %s)", (version, name, NOW))
        for statement, params in _rows(list):
            conn.execute(statement.format(", ".join(["%s"] * len(params))), params)
    with PostgresStore(url) as store:
        yield store


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    factory = _sqlite if request.param == "sqlite" else _postgres
    yield from factory(tmp_path)


def test_existing_launch_tokens_and_agents_after_migration(migrated: Store) -> None:
    fresh = migrated.get_launch_token("a" * 64)
    used = migrated.get_launch_token("b" * 64)
    multi = migrated.get_launch_token("c" * 64)
    assert fresh is not None and used is not None and multi is not None
    assert (fresh.max_uses, fresh.uses, fresh.allow_resume) == (1, 0, True)
    assert (used.max_uses, used.uses, used.consumed_at) == (1, 1, NOW + 1)
    assert (multi.max_uses, multi.uses) == (DEFAULT_MULTI_USES, 0)
    agent = migrated.get_agent(AGENT)
    assert agent is not None and agent.allow_resume is True
    with migrated.write() as tx:
        assert tx.consume_launch_token(fresh.token_hash, NOW) is True
        assert tx.consume_launch_token(used.token_hash, NOW) is False
        assert tx.consume_launch_token(multi.token_hash, NOW) is True
    counted = migrated.get_launch_token(multi.token_hash)
    assert counted is not None and counted.uses_left == DEFAULT_MULTI_USES - 1
