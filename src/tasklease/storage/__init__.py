"""Implementations of :mod:`tasklease.core.store`.

``open_store(url)`` picks one from a URL:

* a filesystem path, or ``sqlite:///abs/path`` -> :class:`SQLiteStore` (the default)
* ``memory://`` -> :class:`MemoryStore` (tests; nothing survives a restart)
* ``postgresql://...`` -> PostgreSQL (not in this build yet)

Every implementation passes the one conformance suite in ``tests/storage``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from tasklease.core.store import Store
from tasklease.storage.memory import MemoryStore
from tasklease.storage.sqlite import SchemaError, SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "SchemaError", "open_store"]


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store that ``url`` names.

    ``migrate`` applies pending schema migrations (durable stores only); with
    ``migrate=False`` an out-of-date database raises :class:`SchemaError`. Raise
    ``ValueError`` for a URL this build cannot open.
    """
    if "://" not in url:
        if not url:
            raise ValueError("store URL is empty")
        return SQLiteStore(url, migrate=migrate)
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
        return SQLiteStore(path, migrate=migrate)
    if scheme in ("postgresql", "postgres"):
        raise ValueError("PostgreSQL support is not installed in this build")
    raise ValueError(f"unsupported store URL scheme {scheme!r}")
