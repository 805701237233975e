"""Implementations of :mod:`tasklease.core.store`.

``open_store(url)`` picks one from a URL:

* a filesystem path, or ``sqlite:///abs/path`` -> :class:`SQLiteStore` (the default)
* ``memory://`` -> :class:`MemoryStore` (tests; nothing survives a restart, nothing is
  shared between processes: ``tasklease serve`` refuses it)
* ``postgresql://...`` (or ``postgres://``) -> :class:`PostgresStore` (several replicas;
  needs the ``postgres`` extra: psycopg 3 and psycopg_pool)

Every implementation passes the one conformance suite in ``tests/storage``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tasklease.core.config import Config
from tasklease.core.store import Store
from tasklease.rules.storeurls import parse_store_url
from tasklease.storage._sql import SchemaError
from tasklease.storage.memory import MemoryStore
from tasklease.storage.sqlite import SQLiteStore
from tasklease.storage.urls import redact_url

__all__ = [
    "MemoryStore",
    "SQLiteStore",
    "SchemaError",
    "is_shared_database",
    "open_store",
    "postgres_url_problem",
    "redact_url",
]


def is_shared_database(url: str) -> bool:
    """True for a database several replicas share (PostgreSQL).

    Such a database is migrated only by ``tasklease db migrate``, never implicitly at
    start-up: replicas of two versions must not race to change the schema under each
    other during a rolling upgrade. SQLite (one host) migrates when it is opened.
    """
    return urlsplit(url).scheme.lower() in ("postgresql", "postgres") if "://" in url else False


def postgres_url_problem(url: str) -> str | None:
    """Why libpq cannot read the PostgreSQL URL ``url``, in words that do not quote it, or
    None: the reading the store connects by (``_pg_guard.parse_conninfo``), for a check
    made before any connection (``tasklease doctor``). None without the ``postgres``
    extra, whose absence the store reports itself."""
    try:
        from tasklease.storage._pg_guard import parse_conninfo
    except ImportError:  # pragma: no cover - the postgres extra is installed here
        return None
    try:
        parse_conninfo(url)
    except ValueError as exc:
        return str(exc)
    return None


def open_store(
    url: str, *, migrate: bool = True, config: Config | None = None, create: bool = True
) -> Store:
    """Open the store that ``url`` names.

    ``migrate`` applies pending schema migrations (durable stores only); with
    ``migrate=False`` an out-of-date database raises :class:`SchemaError`. With
    ``create=False`` a SQLite file that does not exist, or holds no schema, raises
    :class:`SchemaError` instead of being made (PostgreSQL databases are never created
    here). ``config`` gives PostgreSQL its limits (the ``database_*`` settings; defaults
    without it). Raise ``ValueError`` for a URL this build cannot open.
    """
    kind, where = parse_store_url(url)  # ValueError: no store opens it
    if kind == "sqlite":
        return SQLiteStore(where, migrate=migrate, create=create)
    if kind == "memory":
        return MemoryStore()
    if kind == "postgresql":  # the only other kind
        try:
            from tasklease.storage.postgres import PostgresStore
        except ImportError:
            raise ValueError(
                "PostgreSQL support needs psycopg: pip install 'tasklease[postgres]'"
            ) from None
        from tasklease.storage._pg_guard import Limits

        limits = Limits()
        if config is not None:
            limits = Limits(
                statement_timeout=config.database_statement_timeout,
                lock_timeout=config.database_lock_timeout,
                connect_timeout=config.database_connect_timeout,
                pool_timeout=config.database_pool_timeout,
                tcp_timeout=config.database_tcp_timeout,
            )
        return PostgresStore(url, migrate=migrate, limits=limits)
    raise ValueError(f"unsupported store {kind!r}")  # pragma: no cover - parse_store_url's
