"""PostgreSQL schema management: `db migrate`, and `serve` refusing the wrong schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from e2e_support import free_port
from pg_e2e import migrate, tasklease_cli, tasklease_in_process

from tasklease.storage import SchemaError, open_store
from tasklease.storage.postgres import PostgresStore


def test_open_without_migrating_refuses_an_empty_database(pg_url: str) -> None:
    with pytest.raises(SchemaError, match="run `tasklease db migrate`"):
        open_store(pg_url, migrate=False)


def test_db_migrate_then_open(pg_url: str, tmp_path: Path) -> None:
    done = migrate(pg_url, tmp_path, in_process=False)
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
    # A broker's keys (made on SQLite: init refuses an unmigrated PostgreSQL database too).
    made = tasklease_in_process("init", "--data-dir", str(tmp_path), env={})
    assert made.returncode == 0, made.stdout + made.stderr
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
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "run `tasklease db migrate`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_migrated_database_no_init_ran_on_is_no_broker(pg_url: str, tmp_path: Path) -> None:
    """The schema alone is not a broker: ``serve`` refuses a database whose audit log is
    empty (a database migrated by mistake, or never set up with ``tasklease init``), and
    ``init`` on it makes the broker, once: a second init there is refused, whatever data
    directory it is given (docs/decisions.md 145)."""
    migrate(pg_url, tmp_path / "migrate")
    keys = tasklease_in_process("init", "--data-dir", str(tmp_path / "sqlite"), env={})
    assert keys.returncode == 0, keys.stdout + keys.stderr
    on_pg = {
        "TASKLEASE_DATABASE": pg_url,
        "TASKLEASE_ADMIN_SECRET": "schema-tests-admin-secret-0123456789",
    }
    serve = tasklease_cli(
        "serve", "--data-dir", str(tmp_path / "sqlite"), "--port", str(free_port()),
        env=on_pg, cwd=tmp_path,
    )  # fmt: skip
    assert serve.returncode == 2, serve.stdout + serve.stderr
    said = " ".join(serve.stderr.split())
    assert "holds no audit event" in said and "Only `tasklease init` creates a broker" in said
    assert "Traceback" not in serve.stderr

    first = tasklease_cli("init", "--data-dir", str(tmp_path / "a"), env=on_pg, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = tasklease_cli("init", "--data-dir", str(tmp_path / "b"), env=on_pg, cwd=tmp_path)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "a broker already exists here" in " ".join(second.stderr.split())
    assert "audit events" in second.stderr
    assert not (tmp_path / "b" / "keys").exists()  # refused before making anything


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
