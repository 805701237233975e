"""The signing keys retired (``core.signing``) on every backend (``store`` fixture: memory,
SQLite, PostgreSQL): recorded by kid, the first retirement kept, undone with its
transaction, and per tenant."""

from __future__ import annotations

import pytest

from tasklease.core.store import Store


class _Undo(Exception):
    pass


def test_retired_kids_are_recorded_once_and_kept(store: Store) -> None:
    assert store.retired_keys() == frozenset()
    with store.write() as tx:
        tx.put_retired_key("kid-a", 1_800_000_000.0)
        tx.put_retired_key("kid-b", 1_800_000_001.0)
    with store.write() as tx:
        tx.put_retired_key("kid-a", 1_800_000_009.0)  # retired again: no error, kept once
    assert store.retired_keys() == frozenset({"kid-a", "kid-b"})


def test_a_rolled_back_retirement_is_undone(store: Store) -> None:
    with pytest.raises(_Undo), store.write() as tx:
        tx.put_retired_key("kid-a", 1_800_000_000.0)
        raise _Undo
    with store.write() as tx, pytest.raises(_Undo), tx.savepoint():
        tx.put_retired_key("kid-b", 1_800_000_000.0)
        raise _Undo
    assert store.retired_keys() == frozenset()


def test_a_tenants_retirements_are_its_own(store: Store) -> None:
    acme, globex = store.for_tenant("acme"), store.for_tenant("globex")
    with acme.write() as tx:
        tx.put_retired_key("kid-a", 1_800_000_000.0)
    assert acme.retired_keys() == frozenset({"kid-a"})
    assert globex.retired_keys() == frozenset() and store.retired_keys() == frozenset()
