# Would fail if: a backend lost or reordered a tile's hashes, let a tile grow from the
# wrong length, kept the tree of one tenant in another's rows, let an older checkpoint
# replace a newer one, or the group committer appended events without their leaves.
"""The audit log's Merkle tree and checkpoints on every backend (memory, SQLite,
PostgreSQL): tiles that only grow, the tree row, proofs read back, tenants apart."""

from __future__ import annotations

import hashlib

import pytest

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import GENESIS_HASH, AuditEntry, event_hash, verify_chain
from tasklease.core.audittree import append_leaves, consistency_proof, inclusion_proof, root_at
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Conflict
from tasklease.core.store import AuditEvent, AuditQuery, CheckpointRecord, Store, TileAppend
from tasklease.rules.auditchain import event_leaf
from tasklease.rules.merkle import leaf_hash, root_of, verify_consistency, verify_inclusion


def leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def test_tiles_grow_and_the_tree_is_read_back(store: Store) -> None:
    assert store.audit_tree() is None
    hashes = leaves(300)
    tree = None
    for start in (0, 1, 17, 100, 256, 299):  # appends that cross tile borders
        end = {0: 1, 1: 17, 17: 100, 100: 256, 256: 299, 299: 300}[start]
        with store.write() as tx:
            assert tx.audit_tree() == tree
            tree, tiles = append_leaves(tree, hashes[start:end])
            tx.append_audit_tree(tree, tiles)
    assert tree is not None
    assert store.audit_tree() == tree
    assert tree.root == root_of(hashes)
    for size in (1, 16, 17, 255, 256, 257, 300):
        assert root_at(store, tree, size) == root_of(hashes[:size])
        for index in {0, size // 2, size - 1}:
            proof = inclusion_proof(store, tree, index, size)
            verify_inclusion(hashes[index], index, size, proof, root_of(hashes[:size]))
        first = max(1, size // 3)
        proof = consistency_proof(store, tree, first, size)
        verify_consistency(first, size, proof, root_of(hashes[:first]), root_of(hashes[:size]))
    assert store.audit_tiles([(0, 0), (0, 18), (1, 0), (2, 0), (9, 9)]).keys() == {
        (0, 0),
        (0, 18),
        (1, 0),
        (2, 0),
    }
    assert store.audit_tiles([(0, 18)])[(0, 18)] == b"".join(hashes[288:300])


def test_a_tile_grows_only_from_the_length_it_has(store: Store) -> None:
    tree, tiles = append_leaves(None, leaves(5))
    with store.write() as tx:
        tx.append_audit_tree(tree, tiles)
    wrong = TileAppend(0, 0, 4, leaf_hash(b"x"))  # the tile holds 5, not 4
    with pytest.raises(Conflict), store.write() as tx:
        tx.append_audit_tree(tree, [wrong])
    again = TileAppend(0, 0, 0, leaf_hash(b"x"))  # a second first write of the tile
    with pytest.raises(Conflict), store.write() as tx:
        tx.append_audit_tree(tree, [again])
    assert store.audit_tiles([(0, 0)])[(0, 0)] == b"".join(leaves(5))
    assert store.audit_tree() == tree


def test_the_group_committer_appends_each_events_leaf_in_its_transaction(store: Store) -> None:
    log = AuditLog(store, ManualClock())
    for i in range(40):
        log.record(
            *[
                AuditEntry("e", detail=f"{i}-{j}", principal_ref="0123456789abcdef")
                for j in range(i % 3 + 1)
            ]
        )
    events = list(store.iter_audit())
    assert verify_chain(events).ok
    assert all(e.version == 2 and e.tenant == store.tenant for e in events)
    tree = store.audit_tree()
    assert tree is not None and tree.size == len(events)
    assert tree.root == root_of([event_leaf(e.hash) for e in events])
    found, total = store.query_audit(AuditQuery(principal_ref="0123456789abcdef", limit=5))
    assert total == len(events) and len(found) == 5
    assert store.query_audit(AuditQuery(principal_ref="fedcba9876543210"))[1] == 0


def test_events_written_before_the_tree_are_taken_in_order(store: Store) -> None:
    """A log older than the tree (format v1 events, no tiles): catch_up_tree and the next
    append take the old events' leaves first, so leaf seq - 1 is always event seq."""
    prev, old = GENESIS_HASH, []
    for seq in range(1, 8):
        entry = AuditEntry("old", detail=str(seq))
        digest = event_hash(prev, seq, "2026-01-01T00:00:00Z", entry, version=1)
        old.append(
            AuditEvent(seq, "2026-01-01T00:00:00Z", "old", "", "", "", str(seq), "", "success",
                       0, "", "", prev, digest, store.tenant)
        )  # fmt: skip
        prev = digest
    with store.write() as tx:
        tx.audit_head()
        tx.append_audit(old)
    assert store.audit_tree() is None
    log = AuditLog(store, ManualClock())
    assert log.catch_up_tree(limit=3) == 4
    log.record(AuditEntry("new"))  # takes the 4 missing leaves first, then its own
    events = list(store.iter_audit())
    assert verify_chain(events).ok
    assert [e.version for e in events] == [1] * 7 + [2]
    tree = store.audit_tree()
    assert tree is not None and tree.size == len(events) == 8
    assert tree.root == root_of([event_leaf(e.hash) for e in events])
    assert log.catch_up_tree() == 0


def test_tenants_have_trees_of_their_own(store: Store) -> None:
    acme = store.for_tenant("acme")
    AuditLog(store, ManualClock()).record(*[AuditEntry("d") for _ in range(3)])
    AuditLog(acme, ManualClock()).record(AuditEntry("a"))
    tree, acme_tree = store.audit_tree(), acme.audit_tree()
    assert tree is not None and acme_tree is not None
    assert (tree.size, acme_tree.size) == (3, 1)
    assert acme.audit_tiles([(0, 0)])[(0, 0)] == event_leaf(next(acme.iter_audit()).hash)
    assert [e.tenant for e in acme.iter_audit()] == ["acme"]
    assert verify_chain(acme.iter_audit()).ok


def test_a_checkpoint_is_replaced_only_by_a_larger_one(store: Store) -> None:
    assert store.get_checkpoint("signed") is None
    first = CheckpointRecord("signed", 5, "note 5\n", 1.0)
    with store.write() as tx:
        assert tx.put_checkpoint(first)
    with store.write() as tx:
        assert not tx.put_checkpoint(CheckpointRecord("signed", 4, "note 4\n", 2.0))
        assert tx.put_checkpoint(CheckpointRecord("final", 3, "final 3\n", 2.0))
    assert store.get_checkpoint("signed") == first
    assert store.get_checkpoint("final") == CheckpointRecord("final", 3, "final 3\n", 2.0)
    with store.write() as tx:
        assert tx.put_checkpoint(CheckpointRecord("signed", 9, "note 9\n", 3.0))
    assert store.get_checkpoint("signed") == CheckpointRecord("signed", 9, "note 9\n", 3.0)
    assert store.for_tenant("acme").get_checkpoint("signed") is None


def test_tile_bytes_survive_whatever_they_hold(store: Store) -> None:
    """Hashes are arbitrary bytes (NULs, invalid UTF-8): SQLite's concatenation of blobs
    must give them back byte for byte."""
    raw = [hashlib.sha256(bytes([i])).digest()[:1] + bytes(range(31)) for i in range(16)]
    tree, tiles = append_leaves(None, raw[:7])
    with store.write() as tx:
        tx.append_audit_tree(tree, tiles)
    tree, tiles = append_leaves(tree, raw[7:])
    with store.write() as tx:
        tx.append_audit_tree(tree, tiles)
    assert store.audit_tiles([(0, 0)])[(0, 0)] == b"".join(raw)
