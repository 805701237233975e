"""The built-in admin's credential on record (``core.adminsecret``) on every backend
(``store`` fixture: memory, SQLite, PostgreSQL): one row, replaced, undone with its
transaction."""

from __future__ import annotations

import pytest

from tasklease.core.store import Store


class _Undo(Exception):
    pass


def test_the_admin_credential_is_recorded_and_replaced(store: Store) -> None:
    assert store.admin_credential() is None
    with store.write() as tx:
        assert tx.get_admin_credential() is None
        tx.put_admin_credential("$argon2id$first", 1_800_000_000.5)
        assert tx.get_admin_credential() == "$argon2id$first"
    assert store.admin_credential() == "$argon2id$first"  # read outside a transaction too
    with store.write() as tx:
        assert tx.get_admin_credential() == "$argon2id$first"
        tx.put_admin_credential("$argon2id$second", 1_800_000_100.5)
    with store.write() as tx:
        assert tx.get_admin_credential() == "$argon2id$second"
    # One row for the whole database: every tenant's view reads it (decision 257).
    assert store.for_tenant("acme").admin_credential() == "$argon2id$second"


def test_a_rolled_back_record_is_undone(store: Store) -> None:
    with store.write() as tx:
        tx.put_admin_credential("$argon2id$kept", 1_800_000_000.0)
    with pytest.raises(_Undo), store.write() as tx:
        tx.put_admin_credential("$argon2id$undone", 1_800_000_001.0)
        raise _Undo
    with store.write() as tx:
        with pytest.raises(_Undo), tx.savepoint():
            tx.put_admin_credential("$argon2id$undone-too", 1_800_000_002.0)
            raise _Undo
        assert tx.get_admin_credential() == "$argon2id$kept"
