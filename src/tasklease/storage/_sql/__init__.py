"""What the SQLite and PostgreSQL stores share, written once.

Both stores keep the same tables with the same columns (``storage/migrations``), so most
of what they do is the same SQL, told apart only by how a parameter is bound (``?`` or
``%s``), how a boolean column is tested, whether a read inside a write locks its row and
how a scope list is stored (JSON text or ``text[]``). Here are:

* ``dialect``: :class:`Dialect`, one dialect's spelling of every shared statement,
  built once when its store module is imported (so the drivers' statement caches see
  the same strings every time);
* ``rows``: the row conversions, records to statement parameters and fetched rows back;
* ``write_tx`` and ``store``: :class:`SQLWriteTx` and :class:`SQLStore`, the writes
  and the reads whose logic is the same in both. ``sqlite.py`` and ``postgres.py`` add
  what is their own: connections, transactions and applying migrations;
  ``_sqlite_tx.py`` and ``_pg_tx.py`` their write transactions' savepoints, audit head
  and revocation upsert;
* ``schema``: :class:`SchemaError` and the numbered migration files.

Nothing here imports a database driver: the SQLite store must work without psycopg.
"""

from tasklease.storage._sql.dialect import (
    DEFAULT_TENANT,
    GENESIS_HASH,
    SELECT_REVOCATION,
    Dialect,
    Row,
    audit_rows,
    check_tenant_id,
    revocation_from_row,
)
from tasklease.storage._sql.schema import Migration, SchemaError, migration_failed, newer_error
from tasklease.storage._sql.store import SharedState, SQLStore, SQLWriteTx

__all__ = [
    "DEFAULT_TENANT",
    "GENESIS_HASH",
    "SELECT_REVOCATION",
    "Dialect",
    "Migration",
    "Row",
    "SQLStore",
    "SQLWriteTx",
    "SchemaError",
    "SharedState",
    "audit_rows",
    "check_tenant_id",
    "migration_failed",
    "newer_error",
    "revocation_from_row",
]
