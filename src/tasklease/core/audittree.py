"""The audit log's Merkle tree in storage: tiles appended with the events, proofs read back.

Each tenant's events are the leaves of an RFC 9162 tree (:mod:`tasklease.rules.merkle`;
leaf ``seq - 1`` is ``SHA-256(0x00 || event hash)``, :mod:`tasklease.rules.auditchain`).
It is stored the way C2SP ``tlog-tiles`` lays a tree out, with tiles of 16 hashes rather
than 256 (one tlog tile of level ``L`` is 16 consecutive tiles of level ``2L`` here):

* a tile ``(level, index)`` holds up to 16 consecutive hashes of complete subtrees of
  ``16**level`` leaves: level 0 the leaf hashes, level 1 the roots of 16 leaves, ...;
  a tile grows until it is full and never changes what it holds;
* the tree row keeps the size, the root and the right edge (the complete subtrees'
  hashes that make up the leaves, one per set bit of the size).

Appending ``B`` leaves to a tree of ``n`` reads nothing but the tree row and writes the
few tiles that grow (one or two at level 0, rarely more) and the row: ``O(B + log n)``,
in the transaction that appends the events. A node of level ``4L + j`` is the root of
``2**j`` hashes of one tile of level ``L``, so a proof's ``O(log n)`` nodes come from
``O(log n)`` tiles read at once, and at most 7 hashes per node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from tasklease.core.errors import Conflict, InvalidRequest
from tasklease.core.records import AuditTree, TileAppend
from tasklease.rules.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Node,
    consistency_plan,
    fold,
    inclusion_plan,
    node_hash,
    range_nodes,
)

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileReader",
    "append_leaves",
    "consistency_proof",
    "inclusion_proof",
    "root_at",
    "tile_of",
]

TILE_HEIGHT = 4
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes per full tile


class TileReader(Protocol):
    """What proofs read: the tiles that exist among ``keys`` (a store, or a cache over one)."""

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]: ...


def empty_tree() -> AuditTree:
    return AuditTree(0, EMPTY_ROOT, ())


# --- appending --------------------------------------------------------------------------


def append_leaves(
    tree: AuditTree | None, leaves: Iterable[bytes]
) -> tuple[AuditTree, list[TileAppend]]:
    """``tree`` with ``leaves`` (leaf hashes) appended, and the tile appends that store it.

    Each leaf goes to tile level 0; each subtree of ``16**L`` leaves the append completes
    (met on the way up the right edge) goes to tile level ``L``.
    """
    start = tree or empty_tree()
    if len(start.edge) != start.size.bit_count():
        raise Conflict("the audit tree on record is damaged: its edge does not fit its size")
    edge = list(start.edge)
    size = start.size
    added: dict[int, list[bytes]] = {}
    first: dict[int, int] = {}  # tile level -> position (in hashes) of its first new hash
    for leaf in leaves:
        if 0 not in added:
            added[0], first[0] = [], size
        added[0].append(leaf)
        h, n, level = leaf, size, 0
        size += 1
        while n & 1:  # each trailing one of the old size completes a subtree
            h = node_hash(edge.pop(), h)
            n >>= 1
            level += 1
            if level % TILE_HEIGHT == 0:
                tile_level = level // TILE_HEIGHT
                if tile_level not in added:
                    added[tile_level], first[tile_level] = [], (size >> level) - 1
                added[tile_level].append(h)
        edge.append(h)
    tiles: list[TileAppend] = []
    for tile_level in sorted(added):
        position, hashes = first[tile_level], added[tile_level]
        done = 0
        while done < len(hashes):
            offset = position % TILE_WIDTH
            take = min(TILE_WIDTH - offset, len(hashes) - done)
            chunk = b"".join(hashes[done : done + take])
            tiles.append(TileAppend(tile_level, position // TILE_WIDTH, offset, chunk))
            position += take
            done += take
    root = fold(edge) if edge else EMPTY_ROOT
    return AuditTree(size, root, tuple(edge)), tiles


# --- reading proofs ------------------------------------------------------------------------


def tile_of(node: Node) -> tuple[tuple[int, int], int, int]:
    """Where a node's hashes are: its tile ``(level, index)``, the first hash's offset in
    it and how many hashes (a power of two, at most 16) its root is made of."""
    level, index = node
    tile_level, j = divmod(level, TILE_HEIGHT)
    first = index << j
    return (tile_level, first // TILE_WIDTH), first % TILE_WIDTH, 1 << j


def _subtree(hashes: list[bytes]) -> bytes:
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _resolve(reader: TileReader, plan: Sequence[Sequence[Node]]) -> list[bytes]:
    """The hash of each entry of ``plan`` (each the fold of its nodes), from one read."""
    keys = sorted({tile_of(node)[0] for nodes in plan for node in nodes})
    tiles = reader.audit_tiles(keys) if keys else {}
    out: list[bytes] = []
    for nodes in plan:
        hashes: list[bytes] = []
        for node in nodes:
            key, offset, count = tile_of(node)
            tile = tiles.get(key, b"")
            end = (offset + count) * HASH_SIZE
            if len(tile) < end:
                raise Conflict(
                    f"the audit tree's tile {key} holds {len(tile) // HASH_SIZE} hashes, "
                    f"fewer than the {offset + count} this proof needs: the tree is damaged"
                )
            raw = tile[offset * HASH_SIZE : end]
            hashes.append(_subtree([raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]))
        out.append(fold(hashes))
    return out


def _check_size(size: int, tree: AuditTree | None, what: str) -> None:
    current = tree.size if tree is not None else 0
    if not 0 <= size <= current:
        raise InvalidRequest(f"{what} must be between 0 and the tree size ({current})")


def inclusion_proof(
    reader: TileReader, tree: AuditTree | None, index: int, size: int
) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Raise ``InvalidRequest`` unless ``0 <= index < size <= tree.size``.
    """
    _check_size(size, tree, "size")
    if not 0 <= index < size:
        raise InvalidRequest("index must be below size")
    return _resolve(reader, inclusion_plan(index, size))


def consistency_proof(
    reader: TileReader, tree: AuditTree | None, first: int, second: int
) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of ``first`` leaves to ``second``.

    Raise ``InvalidRequest`` unless ``0 < first <= second <= tree.size``.
    """
    _check_size(second, tree, "second")
    if not 0 < first <= second:
        raise InvalidRequest("first must be above 0 and at most second")
    return _resolve(reader, consistency_plan(first, second))


def root_at(reader: TileReader, tree: AuditTree | None, size: int) -> bytes:
    """The root of the tree of the first ``size`` leaves (the empty tree's for 0)."""
    _check_size(size, tree, "size")
    if tree is not None and size == tree.size:
        return tree.root
    if size == 0:
        return EMPTY_ROOT
    return _resolve(reader, [range_nodes(0, size)])[0]
