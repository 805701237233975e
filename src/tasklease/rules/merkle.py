"""The RFC 9162 Merkle tree (section 2.1): hashes, proofs to generate, proofs to verify.

SHA-256 throughout. A leaf's hash is ``H(0x00 || data)``, a node's ``H(0x01 || left ||
right)``; a tree of ``n > 1`` leaves splits at ``k``, the largest power of two smaller than
``n``; the empty tree's root is ``H("")``.

A *node* here is a complete, aligned subtree, named ``(level, index)``: the ``2**level``
leaves from ``index * 2**level``. Every hash a proof holds is the root of a range of leaves
``[start, end)`` that the RFC's recursion produces, and each such range is a run of
complete nodes, largest first (:func:`range_nodes`), folded right to left (:func:`fold`).
So a proof is generated in two steps: :func:`inclusion_plan` / :func:`consistency_plan`
say which nodes each proof hash is made of, and whoever stores the tree reads just those
(``O(log n)`` of them) and folds them. Verification (:func:`verify_inclusion`,
:func:`verify_consistency`) is RFC 9162 sections 2.1.3.2 and 2.1.4.2, with the checks
transparency-dev/merkle adds: every hash 32 bytes, an exact proof length, and for two
trees of one size an empty proof and equal roots.

Standard library only; pure functions.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "Node",
    "ProofError",
    "consistency_plan",
    "fold",
    "inclusion_plan",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "root_from_inclusion",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"

Node = tuple[int, int]
"""``(level, index)``: the complete subtree of leaves ``[index << level, (index + 1) << level)``."""


class ProofError(ValueError):
    """A proof that does not prove what it claims, or a request no proof can answer."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE + left + right).digest()


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of a range from the hashes of its complete nodes, left to right.

    A range of ``s`` leaves splits at the largest power of two below ``s``; its left part
    is its first (largest) node and its right part the rest, so its root is the nodes
    folded from the right. Raise ``ProofError`` for no hashes.
    """
    if not hashes:
        raise ProofError("a range holds at least one node")
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = _sha256(_NODE + left + root).digest()
    return root


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete nodes that make up leaves ``[start, end)``, left to right.

    Largest first: each node is the largest aligned power of two that starts where the
    previous one ended and fits. For the ranges the RFC's recursion yields (``start`` a
    multiple of a power of two at least the range's size), folding them gives the
    range's root. Raise ``ProofError`` for an empty or negative range.
    """
    if not 0 <= start < end:
        raise ProofError(f"no leaves in [{start}, {end})")
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of a tree over ``leaf_hashes`` (hashes, not data), ``O(n)``."""
    tree = CompactRange()
    tree.extend(leaf_hashes)
    return tree.root()


# --- generating proofs --------------------------------------------------------------------


def _path(m: int, start: int, n: int, out: list[tuple[int, int]]) -> None:
    """RFC 9162 2.1.3.1 PATH(m, D[start:start+n]): the ranges, bottom up, into ``out``."""
    if n <= 1:
        return
    k = _split(n)
    if m < k:
        _path(m, start, k, out)
        out.append((start + k, start + n))
    else:
        _path(m - k, start + k, n - k, out)
        out.append((start, start + k))


def _subproof(m: int, start: int, n: int, whole: bool, out: list[tuple[int, int]]) -> None:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[start:start+n], b): the ranges, into ``out``."""
    if m == n:
        if not whole:
            out.append((start, start + n))
        return
    k = _split(n)
    if m <= k:
        _subproof(m, start, k, whole, out)
        out.append((start + k, start + n))
    else:
        _subproof(m - k, start + k, n - k, False, out)
        out.append((start, start + k))


def inclusion_plan(index: int, size: int) -> list[list[Node]]:
    """The nodes of each hash of the inclusion proof of leaf ``index`` in a tree of ``size``.

    One list per proof hash, bottom up (the order the proof is sent in); each lists the
    complete nodes whose :func:`fold` is that hash. Raise ``ProofError`` unless
    ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    ranges: list[tuple[int, int]] = []
    _path(index, 0, size, ranges)
    return [range_nodes(a, b) for a, b in ranges]


def consistency_plan(size1: int, size2: int) -> list[list[Node]]:
    """The nodes of each hash of the consistency proof from ``size1`` to ``size2``.

    As :func:`inclusion_plan`. Empty when ``size1 == size2``. Raise ``ProofError`` unless
    ``0 < size1 <= size2`` (from the empty tree there is nothing to prove).
    """
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from {size1} to {size2}")
    if size1 == size2:
        return []
    ranges: list[tuple[int, int]] = []
    _subproof(size1, 0, size2, True, ranges)
    return [range_nodes(a, b) for a, b in ranges]


# --- verifying proofs ----------------------------------------------------------------------


def _hashes(proof: Iterable[bytes]) -> list[bytes]:
    hashes = list(proof)
    for item in hashes:
        if not isinstance(item, bytes) or len(item) != HASH_SIZE:
            raise ProofError("every hash of a proof is 32 bytes")
    return hashes


def _same(a: bytes, b: bytes) -> bool:
    return len(a) == HASH_SIZE and hmac.compare_digest(a, b)


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Iterable[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf`` (a leaf hash) at ``index`` of ``size``.

    RFC 9162 2.1.3.2. Raise ``ProofError`` when the proof cannot lead anywhere for this
    index and size (too long, too short, a hash of the wrong length).
    """
    hashes = _hashes(proof)
    if len(leaf) != HASH_SIZE:
        raise ProofError("a leaf hash is 32 bytes")
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in hashes:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE + p + r).digest()
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Iterable[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree ``(size, root)``.

    Raise ``ProofError`` if it is not shown to be.
    """
    if not _same(root_from_inclusion(leaf, index, size, proof), root):
        raise ProofError("the inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Iterable[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree ``(size2, root2)`` extends the tree ``(size1, root1)``.

    RFC 9162 2.1.4.2 for ``0 < size1 < size2``; for ``size1 == size2`` the proof must be
    empty and the roots equal. Raise ``ProofError`` otherwise, for ``size1 == 0`` (an
    empty tree is a prefix of every tree; there is no proof to check) and for
    ``size1 > size2``.
    """
    hashes = _hashes(proof)
    if len(root1) != HASH_SIZE or len(root2) != HASH_SIZE:
        raise ProofError("a root is 32 bytes")
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from {size1} to {size2}")
    if size1 == size2:
        if hashes:
            raise ProofError("a proof between two trees of one size is empty")
        if not _same(root1, root2):
            raise ProofError("two trees of one size with different roots")
        return
    if not hashes:
        raise ProofError("the consistency proof is empty")
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the first node
        hashes.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE + c + fr).digest()
            sr = _sha256(_NODE + c + sr).digest()
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if not _same(fr, root1):
        raise ProofError("the consistency proof does not lead to the old root")
    if not _same(sr, root2):
        raise ProofError("the consistency proof does not lead to the new root")


# --- building a tree leaf by leaf ----------------------------------------------------------


class CompactRange:
    """The right edge of a tree: the hashes of the complete nodes that make up its leaves.

    Appending a leaf costs one hash plus one per node it completes (two on average), and
    the root folds the at most 64 edge hashes, so a tree of any size is built in
    ``O(n)`` time and ``O(log n)`` memory. ``edge`` and ``size`` are what to keep to
    resume later (:meth:`resume`).
    """

    __slots__ = ("_edge", "size")

    def __init__(self) -> None:
        self._edge: list[bytes] = []
        self.size = 0

    @classmethod
    def resume(cls, size: int, edge: Sequence[bytes]) -> CompactRange:
        """The range of a tree of ``size`` leaves whose edge hashes are ``edge``.

        Raise ``ProofError`` unless there is one 32-byte hash per set bit of ``size``.
        """
        hashes = _hashes(edge)
        if size < 0 or len(hashes) != size.bit_count():
            raise ProofError(f"a tree of {size} leaves has {max(size, 0).bit_count()} edge hashes")
        tree = cls()
        tree._edge = hashes
        tree.size = size
        return tree

    @property
    def edge(self) -> tuple[bytes, ...]:
        """The complete nodes' hashes, largest (leftmost) first."""
        return tuple(self._edge)

    def append(self, leaf: bytes) -> int:
        """Add a leaf hash; return how many nodes it completed (the trailing ones of the
        old size): the last of them, the largest, is then ``edge[-1]``."""
        edge = self._edge
        n = self.size
        merged = 0
        while n & 1:
            leaf = _sha256(_NODE + edge.pop() + leaf).digest()
            n >>= 1
            merged += 1
        edge.append(leaf)
        self.size += 1
        return merged

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The tree's root (the empty tree's for no leaves)."""
        return fold(self._edge) if self._edge else EMPTY_ROOT
