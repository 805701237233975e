"""The schema's version and its numbered migrations, the same way for both dialects."""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass

from tasklease.core.errors import InternalError

__all__ = [
    "Migration",
    "SchemaError",
    "migration_failed",
    "migrations",
    "newer_error",
    "older_error",
]


class SchemaError(InternalError):
    """The database's schema is not the one this tasklease can use.

    Raised when opening a database that is older than the code and ``migrate=False``,
    newer than the code (upgrade tasklease), when a migration fails, or when the database
    cannot be used as the store needs (SQLite: WAL mode, a version too old).
    """

    default_detail = "database schema mismatch"


# -- migrations --------------------------------------------------------------------------

_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@functools.cache
def migrations(folder: str, label: str) -> tuple[Migration, ...]:
    """The numbered SQL files in ``storage/migrations/<folder>``, in order.

    Raise ``SchemaError`` (naming the ``label`` dialect) unless they are numbered 0001,
    0002, ... without gaps.
    """
    found: list[Migration] = []
    directory = importlib.resources.files("tasklease.storage") / "migrations" / folder
    for entry in directory.iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match is None or not entry.is_file():
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"{label} migrations must be numbered 0001, 0002, ... without gaps")
    return tuple(found)


def newer_error(current: int, known: int) -> SchemaError:
    return SchemaError(
        f"database schema version {current} is newer than this tasklease (knows {known}): "
        "upgrade tasklease"
    )


def migration_failed(migration: Migration, exc: BaseException) -> SchemaError:
    """The error for ``migration`` failing with the driver's ``exc`` (raise it ``from exc``)."""
    return SchemaError(f"migration {migration.version:04d}_{migration.name} failed: {exc}")


def older_error(current: int, known: int) -> SchemaError:
    return SchemaError(
        f"database schema version {current} is older than this tasklease "
        f"(needs {known}): run `tasklease db migrate`"
    )
