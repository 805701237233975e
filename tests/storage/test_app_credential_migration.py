"""Migration 0023 on a database written at schema version 22, on SQLite and PostgreSQL.

An app from before its credential changes were kept takes its last update as its last
credential change: a launch token it made before that may have been made with a key
since replaced, so it admits no agent; one made after keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.old_schema import store_at

from tasklease.core.store import Store

NOW = 1_800_000_000.0
BEFORE = 22  # the schema version the rows are written at


def _rows(backend: str) -> list[tuple[str, tuple[object, ...]]]:
    app = (
        "INSERT INTO apps (tenant_id, app_id, name, client_id, secret_hash, scopes, token_ttl,"
        " status, created_at, updated_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    scope: object = json.dumps(["read:data:*"]) if backend == "sqlite" else ["read:data:*"]
    return [
        (app, ("default", "app-a", "a", "a-1", "h", scope, 600, "active", NOW, NOW + 50, "x")),
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_at(request.param, tmp_path, BEFORE, _rows)


def test_an_apps_last_update_is_its_last_credential_change(migrated: Store) -> None:
    app = migrated.get_app("app-a")
    assert app is not None and app.credential_changed_at == NOW + 50
