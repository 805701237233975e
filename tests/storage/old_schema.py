"""A database written at an older schema version, then opened by today's store, which
migrates it: what the tests of one migration start from, on SQLite and PostgreSQL.

``rows(backend)`` gives the statements (with ``?`` placeholders) and parameters that fill
the old schema; ``backend`` is ``"sqlite"`` or ``"postgres"``, for values each stores its
own way (a scope list as JSON text or as an array).
"""

from __future__ import annotations

import importlib.resources
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tasklease.core.store import Store
from tasklease.storage import SQLiteStore

Rows = Callable[[str], Sequence[tuple[str, tuple[object, ...]]]]
APPLIED_AT = 1_800_000_000.0


def migrations(folder: str, before: int) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of the migrations up to version ``before``."""
    found = []
    for entry in (importlib.resources.files("tasklease.storage") / "migrations" / folder).iterdir():
        version, _, rest = entry.name.partition("_")
        if entry.name.endswith(".sql") and int(version) <= before:
            found.append((int(version), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found)


def sqlite_store_at(tmp_path: Path, before: int, rows: Rows) -> Iterator[Store]:
    """A SQLite store opened on a database written at schema version ``before``."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL) STRICT"
    )
    for version, name, sql in migrations("sqlite", before):
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, APPLIED_AT))
    for statement, params in rows("sqlite"):
        conn.execute(statement, params)
    conn.commit()
    conn.close()
    with SQLiteStore(path) as store:
        yield store


def postgres_store_at(before: int, rows: Rows) -> Iterator[Store]:
    """A PostgreSQL store opened on a new database written at schema version ``before``
    (skipped when the session's cluster is unavailable)."""
    import pgcluster
    import psycopg

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    url = cluster.new_database(f"at{before}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
        for version, name, sql in migrations("postgres", before):
            conn.execute(sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO schema_version VALUES (%s, %s, %s)", (version, name, APPLIED_AT)
            )
        for statement, params in rows("postgres"):
            conn.execute(statement.replace("?", "%s").encode("utf-8"), params)
    with PostgresStore(url) as store:
        yield store


def store_at(backend: str, tmp_path: Path, before: int, rows: Rows) -> Iterator[Store]:
    """:func:`sqlite_store_at` or :func:`postgres_store_at`, by ``backend``."""
    if backend == "sqlite":
        yield from sqlite_store_at(tmp_path, before, rows)
    else:
        yield from postgres_store_at(before, rows)
