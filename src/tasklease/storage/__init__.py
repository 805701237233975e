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

from urllib.parse import unquote, urlsplit

from tasklease.core.config import Config
from tasklease.core.store import Store
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
    "redact_url",
]


def is_shared_database(url: str) -> bool:
    """True for a database several replicas share (PostgreSQL).

    Such a database is migrated only by ``tasklease db migrate``, never implicitly at
    start-up: replicas of two versions must not race to change the schema under each
    other during a rolling upgrade. SQLite (one host) migrates when it is opened.
    """
    return urlsplit(url).scheme.lower() in ("postgresql", "postgres") if "://" in url else False


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
    if "://" not in url:
        if not url:
            raise ValueError("store URL is empty")
        return SQLiteStore(url, migrate=migrate, create=create)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError("the memory store URL is exactly memory://")
        return MemoryStore()
    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError("SQLite URLs name a local file: sqlite:///absolute/path")
        if parts.query or parts.fragment:
            raise ValueError("SQLite URLs take no query or fragment")
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError("SQLite URLs name a local file: sqlite:///absolute/path")
        return SQLiteStore(path, migrate=migrate, create=create)
    if scheme in ("postgresql", "postgres"):
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
    raise ValueError(f"unsupported store URL scheme {scheme!r}")
