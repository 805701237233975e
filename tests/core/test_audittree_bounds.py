# Would fail if: a proof or a root were read from a tile holding fewer hashes than it
# needs (a damaged tree answering a wrong root instead of refusing), leaves were appended
# to a tree row whose right edge does not fit its size, a consistency proof were made
# from the empty tree, a size or index below zero were read, or the root of size 0 were
# anything but the empty tree's.
"""The audit tree's bounds (core.audittree) on tiles kept in a dict: what it refuses to
read or append rather than answer from a damaged tree."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tasklease.core.audittree import append_leaves, consistency_proof, inclusion_proof, root_at
from tasklease.core.errors import Conflict, InvalidRequest
from tasklease.core.store import AuditTree, TileAppend
from tasklease.rules.merkle import EMPTY_ROOT, leaf_hash, root_of, verify_consistency


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


class Tiles:
    """A tile reader over the appends ``append_leaves`` made."""

    def __init__(self, appends: Sequence[TileAppend]) -> None:
        self.tiles: dict[tuple[int, int], bytes] = {}
        for append in appends:
            key = (append.level, append.index)
            held = self.tiles.get(key, b"")
            assert len(held) == append.offset * 32
            self.tiles[key] = held + append.hashes

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {key: self.tiles[key] for key in keys if key in self.tiles}


def test_a_tile_short_of_the_hashes_a_proof_needs_is_a_damaged_tree() -> None:
    hashes = _leaves(40)
    tree, appends = append_leaves(None, hashes)
    tiles = Tiles(appends)
    assert root_at(tiles, tree, 8) == root_of(hashes[:8])
    # The first tile of leaves lost its tail: it holds 3 of its 16 hashes.
    tiles.tiles[(0, 0)] = tiles.tiles[(0, 0)][: 3 * 32]
    with pytest.raises(Conflict, match="holds 3 hashes, fewer than the 8 this proof needs"):
        root_at(tiles, tree, 8)
    with pytest.raises(Conflict, match="the tree is damaged"):
        inclusion_proof(tiles, tree, 0, 20)
    with pytest.raises(Conflict, match="the tree is damaged"):
        consistency_proof(tiles, tree, 5, 40)
    del tiles.tiles[(0, 0)]  # and when it is gone
    with pytest.raises(Conflict, match="holds 0 hashes"):
        root_at(tiles, tree, 8)


def test_leaves_are_not_appended_to_a_tree_whose_edge_does_not_fit_its_size() -> None:
    tree, _ = append_leaves(None, _leaves(7))
    assert len(tree.edge) == 3  # 7 = 4 + 2 + 1
    for damaged in (
        AuditTree(tree.size, tree.root, tree.edge[:2]),  # a subtree lost
        AuditTree(tree.size, tree.root, (*tree.edge, leaf_hash(b"x"))),  # one too many
        AuditTree(8, tree.root, tree.edge),  # the size moved, the edge did not
    ):
        with pytest.raises(Conflict, match="its edge does not fit its size"):
            append_leaves(damaged, _leaves(1))
    grown, _ = append_leaves(tree, _leaves(8)[7:])
    assert grown.root == root_of(_leaves(8))


def test_a_consistency_proof_starts_from_a_tree_of_at_least_one_leaf() -> None:
    hashes = _leaves(10)
    tree, appends = append_leaves(None, hashes)
    tiles = Tiles(appends)
    with pytest.raises(InvalidRequest, match="first must be above 0"):
        consistency_proof(tiles, tree, 0, 10)
    with pytest.raises(InvalidRequest, match="first must be above 0 and at most second"):
        consistency_proof(tiles, tree, 6, 5)
    proof = consistency_proof(tiles, tree, 1, 10)
    verify_consistency(1, 10, proof, root_of(hashes[:1]), root_of(hashes))


def test_sizes_and_indexes_below_zero_are_refused_and_size_0_is_the_empty_tree() -> None:
    hashes = _leaves(10)
    tree, appends = append_leaves(None, hashes)
    tiles = Tiles(appends)
    with pytest.raises(InvalidRequest, match="size must be between 0 and the tree size"):
        root_at(tiles, tree, -1)
    with pytest.raises(InvalidRequest, match="size must be between 0 and the tree size"):
        inclusion_proof(tiles, tree, 0, -1)
    with pytest.raises(InvalidRequest, match="index must be below size"):
        inclusion_proof(tiles, tree, -1, 10)
    with pytest.raises(InvalidRequest, match="second must be between 0 and the tree size"):
        consistency_proof(tiles, tree, 1, 11)
    assert root_at(tiles, tree, 0) == EMPTY_ROOT == root_at(tiles, None, 0)
