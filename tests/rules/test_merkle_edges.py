# Would fail if: a consistency proof were checked from or to the empty tree (size 0), an
# empty proof between two different sizes raised anything but ProofError, or a proof
# that is too long, a hash, leaf or root that is not 32 bytes were refused only because
# the recomputed root happens not to match, not by the exact-length checks RFC 9162 and
# transparency-dev/merkle make first.
"""The edges of RFC 9162 proof verification (``rules.merkle``): sizes 0 and equal,
powers of two, and each length check by the reason it gives."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from tasklease.rules.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_plan,
    fold,
    inclusion_plan,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(9)]


def _root(leaves: list[bytes]) -> bytes:
    tree = CompactRange()
    tree.extend(leaves)
    return tree.root()


def _proof(plan: list[list[tuple[int, int]]]) -> list[bytes]:
    return [
        fold([_root(LEAVES[i << level : (i + 1) << level]) for level, i in part]) for part in plan
    ]


def _refused(reason: str) -> AbstractContextManager[pytest.ExceptionInfo[ProofError]]:
    return pytest.raises(ProofError, match=reason)


def test_no_consistency_proof_is_checked_from_the_empty_tree() -> None:
    with _refused("no consistency proof from 0 to 0"):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with _refused("no consistency proof from 0 to 4"):
        verify_consistency(0, 4, [], EMPTY_ROOT, _root(LEAVES[:4]))


@pytest.mark.parametrize(("size1", "size2"), [(3, 5), (5, 9), (1, 2), (4, 8)])
def test_an_empty_proof_between_two_sizes_is_refused(size1: int, size2: int) -> None:
    with _refused("empty"):
        verify_consistency(size1, size2, [], _root(LEAVES[:size1]), _root(LEAVES[:size2]))


@pytest.mark.parametrize(("size1", "size2"), [(1, 9), (2, 9), (3, 9), (4, 9), (8, 9), (5, 6)])
def test_a_consistency_proof_one_hash_too_long_is_refused_as_such(size1: int, size2: int) -> None:
    root1, root2 = _root(LEAVES[:size1]), _root(LEAVES[:size2])
    proof = _proof(consistency_plan(size1, size2))
    verify_consistency(size1, size2, proof, root1, root2)
    with _refused("too long"):
        verify_consistency(size1, size2, [*proof, root2], root1, root2)


def test_a_root_that_is_not_32_bytes_is_refused_as_such() -> None:
    proof = _proof(consistency_plan(3, 5))
    root1, root2 = _root(LEAVES[:3]), _root(LEAVES[:5])
    with _refused("a root is 32 bytes"):
        verify_consistency(3, 5, proof, root1 + b"\x00", root2)
    with _refused("a root is 32 bytes"):
        verify_consistency(3, 5, proof, root1, root2[:31])


def test_an_inclusion_proof_one_hash_too_long_is_refused_as_such() -> None:
    root = _root(LEAVES[:5])
    proof = _proof(inclusion_plan(4, 5))
    verify_inclusion(LEAVES[4], 4, 5, proof, root)
    with _refused("too long"):
        verify_inclusion(LEAVES[4], 4, 5, [*proof, root], root)
    with _refused("too long"):
        verify_inclusion(LEAVES[0], 0, 1, [root], root)


def test_hashes_that_are_not_32_bytes_are_refused_as_such() -> None:
    root = _root(LEAVES[:2])
    with _refused("every hash of a proof is 32 bytes"):
        verify_inclusion(LEAVES[0], 0, 2, [LEAVES[1] + b"\x00"], root)
    with _refused("every hash of a proof is 32 bytes"):
        verify_consistency(1, 2, [LEAVES[1][:31]], LEAVES[0], root)
    with _refused("a leaf hash is 32 bytes"):
        verify_inclusion(LEAVES[0][:31], 0, 2, [LEAVES[1]], root)
