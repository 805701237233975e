"""When each federated domain's revocation feed was last heard current (``core.peerfeed``)
on every backend (``store`` fixture: memory, SQLite, PostgreSQL): kept per domain, never
moved back, undone with its transaction."""

from __future__ import annotations

import pytest

from tasklease.core.store import Store


class _Undo(Exception):
    pass


def test_the_time_heard_only_moves_forward(store: Store) -> None:
    assert store.feed_heard("a.example") is None
    with store.write() as tx:
        tx.put_feed_heard("a.example", 1_800_000_010.5)
        tx.put_feed_heard("c.example", 1_800_000_001.0)
    with store.write() as tx:
        tx.put_feed_heard("a.example", 1_800_000_005.0)  # an older record: kept as it was
    assert store.feed_heard("a.example") == 1_800_000_010.5
    with store.write() as tx:
        tx.put_feed_heard("a.example", 1_800_000_020.0)
    assert store.feed_heard("a.example") == 1_800_000_020.0
    assert store.feed_heard("c.example") == 1_800_000_001.0
    assert store.feed_heard("b.example") is None


def test_a_rolled_back_record_is_undone(store: Store) -> None:
    with store.write() as tx:
        tx.put_feed_heard("a.example", 1_800_000_000.0)
    with pytest.raises(_Undo), store.write() as tx:
        tx.put_feed_heard("a.example", 1_800_000_001.0)
        raise _Undo
    with store.write() as tx, pytest.raises(_Undo), tx.savepoint():
        tx.put_feed_heard("a.example", 1_800_000_002.0)
        raise _Undo
    assert store.feed_heard("a.example") == 1_800_000_000.0
