"""PostgreSQL schema management: `db migrate`, and `serve` refusing the wrong schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pg_e2e import migrate, tasklease_cli

from tasklease.storage import SchemaError, open_store
from tasklease.storage.postgres import PostgresStore


def test_open_without_migrating_refuses_an_empty_database(pg_url: str) -> None:
    with pytest.raises(SchemaError, match="run `tasklease db migrate`"):
        open_store(pg_url, migrate=False)


def test_db_migrate_then_open(pg_url: str, tmp_path: Path) -> None:
    done = migrate(pg_url, tmp_path)
    assert "at the current schema" in done.stdout
    store = open_store(pg_url, migrate=False)
    assert isinstance(store, PostgresStore)
    assert store.schema_version() == PostgresStore.known_schema_version()
    assert store.migrate() == []  # idempotent
    store.close()


def test_newer_schema_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    for migrate_flag in (False, True):
        with pytest.raises(SchemaError, match="newer than this tasklease"):
            PostgresStore(pg_url, migrate=migrate_flag)


def test_serve_refuses_an_unmigrated_database_with_a_clear_message(
    pg_url: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "TASKLEASE_DATABASE": pg_url,
            "TASKLEASE_ADMIN_SECRET": "schema-tests-admin-secret-0123456789",
        },
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "run `tasklease db migrate`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql:///nothing?host={tmp_path}&port=1&user=x"
    done = tasklease_cli("audit", "verify", "--database", url, env={}, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot connect" in done.stderr


def test_concurrent_migrations_apply_once(pg_url: str) -> None:
    import threading

    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            PostgresStore(pg_url).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    assert sorted(versions) == list(range(1, PostgresStore.known_schema_version() + 1))
