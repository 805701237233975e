"""Migration 0007 on a database written at schema version 6, on SQLite and PostgreSQL.

Launch tokens created before uses were counted keep working as they were meant to: a
single-use token already used stays used; a multi-use token gets the default number of
uses; every existing launch token and agent allows resumption.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.old_schema import store_at

from tasklease.core.launch import DEFAULT_MULTI_USES
from tasklease.core.store import Store

NOW = 1_800_000_000.0
BEFORE = 6  # the schema version the rows are written at
AGENT = "spiffe://tasklease.local/agent/orch/task/0123456789abcdef"


def _rows(backend: str) -> list[tuple[str, tuple[object, ...]]]:
    launch = (
        "INSERT INTO launch_tokens (token_hash, agent_name, allowed_scope, max_ttl, single_use,"
        " created_at, expires_at, created_by, consumed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    agent = (
        "INSERT INTO agents (agent_id, public_key, orch_id, task_id, scope, app_id, client_id,"
        " registered_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    scope: object = json.dumps(["read:data:*"]) if backend == "sqlite" else ["read:data:*"]
    return [
        (launch, ("a" * 64, "fresh", scope, 300, True, NOW, NOW + 30, "admin", None)),
        (launch, ("b" * 64, "used", scope, 300, True, NOW, NOW + 30, "admin", NOW + 1)),
        (launch, ("c" * 64, "multi", scope, 300, False, NOW, NOW + 30, "admin", None)),
        (agent, (AGENT, b"k" * 32, "orch", "task", scope, "", "admin", NOW, "active")),
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_at(request.param, tmp_path, BEFORE, _rows)


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
