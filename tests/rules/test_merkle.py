# Would fail if: a leaf or node hash lost its 0x00/0x01 prefix, the tree split anywhere but
# at the largest power of two below its size, a generated proof left out or reordered a
# hash, or a verifier accepted a proof of the wrong length, for another index or size,
# with a flipped bit, or with swapped roots.
"""RFC 9162 section 2.1: known answers and properties of the Merkle tree and its proofs.

Known answers: ``vectors/merkle.json`` is Certificate Transparency's 8-leaf test tree as
published by transparency-dev/merkle at commit 417fb0c314750d94e53942e9f92e79b6d35915db
(``testonly/constants.go`` for the leaves, node and root hashes; ``testdata/inclusion``
and ``testdata/consistency`` for the proofs, including the negative cases), Apache-2.0.
Each case names its upstream file. Properties: for random sizes, every generated proof
verifies against a root computed by the RFC's recursive definition (written out again
below, independently of the module), and any change to it is refused.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklease.rules.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_plan,
    fold,
    inclusion_plan,
    leaf_hash,
    node_hash,
    range_nodes,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "merkle.json").read_text(encoding="utf-8")
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaf_inputs_hex"]]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- an independent reference: RFC 9162 2.1.1 and 2.1.3.1/2.1.4.1, written recursively ----


def mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf *data*, as the RFC defines it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*reference_path(m, leaves[:k]), mth(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), mth(leaves[:k])]


def reference_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*reference_subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*reference_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def data(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


@cache
def nodes_of(n: int) -> dict[tuple[int, int], bytes]:
    """Every complete node of a tree over ``data(n)``, computed by the reference."""
    leaves = data(n)
    table: dict[tuple[int, int], bytes] = {}
    level = 0
    while (1 << level) <= n:
        for index in range(n >> level):
            table[(level, index)] = mth(leaves[index << level : (index + 1) << level])
        level += 1
    return table


def realize(plan: list[list[tuple[int, int]]], n: int) -> list[bytes]:
    table = nodes_of(n)
    return [fold([table[node] for node in hashes]) for hashes in plan]


# --- known answers ---------------------------------------------------------------------------


def test_the_empty_tree_and_the_leaf_hashes_are_the_published_ones() -> None:
    assert h(VECTORS["algorithm"]["empty_tree_root_hex"]) == EMPTY_ROOT == root_of([])
    assert [leaf_hash(x).hex() for x in LEAVES] == VECTORS["leaf_hashes_hex"]


@pytest.mark.parametrize("case", VECTORS["roots"], ids=lambda c: f"size{c['tree_size']}")
def test_roots_of_each_prefix_are_the_published_ones(case: dict[str, Any]) -> None:
    size = case["tree_size"]
    assert root_of([leaf_hash(x) for x in LEAVES[:size]]).hex() == case["root_hex"]
    assert mth(LEAVES[:size]).hex() == case["root_hex"]


@pytest.mark.parametrize("case", VECTORS["inclusion_proofs"], ids=lambda c: c["source_file"])
def test_inclusion_proofs_are_generated_and_verified_as_published(case: dict[str, Any]) -> None:
    index, size = case["leaf_index"], case["tree_size"]
    proof = [h(x) for x in case["proof_hex"]]
    leaves = [leaf_hash(x) for x in LEAVES]
    table = {
        (level, i): root_of(leaves[i << level : (i + 1) << level])
        for level in range(4)
        for i in range(8 >> level)
    }
    generated = [fold([table[n] for n in part]) for part in inclusion_plan(index, size)]
    assert generated == proof
    verify_inclusion(h(case["leaf_hash_hex"]), index, size, proof, h(case["root_hex"]))


@pytest.mark.parametrize("case", VECTORS["consistency_proofs"], ids=lambda c: c["source_file"])
def test_consistency_proofs_are_generated_and_verified_as_published(case: dict[str, Any]) -> None:
    size1, size2 = case["size1"], case["size2"]
    proof = [h(x) for x in case["proof_hex"]]
    leaves = [leaf_hash(x) for x in LEAVES]
    table = {
        (level, i): root_of(leaves[i << level : (i + 1) << level])
        for level in range(4)
        for i in range(8 >> level)
    }
    generated = [fold([table[n] for n in part]) for part in consistency_plan(size1, size2)]
    assert generated == proof
    verify_consistency(size1, size2, proof, h(case["root1_hex"]), h(case["root2_hex"]))


@pytest.mark.parametrize("case", VECTORS["negative_cases"], ids=lambda c: c["source_file"])
def test_the_published_bad_proofs_are_refused(case: dict[str, Any]) -> None:
    proof = [h(x) for x in case["proof_hex"]]
    with pytest.raises(ProofError):
        if case["kind"] == "inclusion":
            verify_inclusion(
                h(case["leaf_hash_hex"]),
                case["leaf_index"],
                case["tree_size"],
                proof,
                h(case["root_hex"]),
            )
        else:
            verify_consistency(
                case["size1"], case["size2"], proof, h(case["root1_hex"]), h(case["root2_hex"])
            )


def test_degenerate_requests_are_refused() -> None:
    root = root_of([leaf_hash(b"a")])
    with pytest.raises(ProofError):
        verify_consistency(0, 1, [], EMPTY_ROOT, root)  # nothing to prove from empty
    with pytest.raises(ProofError):
        verify_consistency(2, 1, [], root, root)
    with pytest.raises(ProofError):
        verify_consistency(1, 1, [root], root, root)  # same size: empty proof only
    with pytest.raises(ProofError):
        verify_consistency(1, 1, [], root, EMPTY_ROOT)  # same size, another root
    verify_consistency(1, 1, [], root, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"a"), 1, 1, [], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"a")[:31], 0, 1, [], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"a"), 0, 2, [b"\x00" * 33], root)
    with pytest.raises(ProofError):
        inclusion_plan(3, 3)
    with pytest.raises(ProofError):
        consistency_plan(0, 3)
    with pytest.raises(ProofError):
        range_nodes(4, 4)
    with pytest.raises(ProofError):
        CompactRange.resume(3, [EMPTY_ROOT])  # 3 leaves: two edge nodes


# --- properties ------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=200, deadline=None)
@given(size=sizes, data_=st.data())
def test_every_inclusion_proof_verifies_and_matches_the_rfc(
    size: int, data_: st.DataObject
) -> None:
    index = data_.draw(st.integers(min_value=0, max_value=size - 1))
    leaves = data(size)
    proof = realize(inclusion_plan(index, size), size)
    assert proof == reference_path(index, leaves)
    root = mth(leaves)
    verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
    # Another index, another size, a shorter or longer proof, a flipped bit: refused.
    if size > 1:
        other = (index + 1) % size
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(leaves[index]), other, size, proof, root)
    with pytest.raises(ProofError):  # the proof of a smaller tree, against a larger one
        verify_inclusion(leaf_hash(leaves[index]), index, size + 1, proof, mth(data(size + 1)))
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(leaves[index]), index, size, proof[:-1], root)
        bit = data_.draw(st.integers(min_value=0, max_value=len(proof) * 256 - 1))
        flipped = list(proof)
        flipped[bit // 256] = _flip(flipped[bit // 256], bit % 256)
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(leaves[index]), index, size, flipped, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[index]), index, size, [*proof, root], root)


@settings(max_examples=200, deadline=None)
@given(size2=sizes, data_=st.data())
def test_every_consistency_proof_verifies_and_matches_the_rfc(
    size2: int, data_: st.DataObject
) -> None:
    size1 = data_.draw(st.integers(min_value=1, max_value=size2))
    leaves = data(size2)
    proof = realize(consistency_plan(size1, size2), size2)
    assert proof == reference_subproof(size1, leaves, True)
    root1, root2 = mth(leaves[:size1]), mth(leaves)
    verify_consistency(size1, size2, proof, root1, root2)
    if size1 < size2:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root2, root1)
        with pytest.raises(ProofError):  # a tree whose first leaves were rewritten
            verify_consistency(size1, size2, proof, mth([b"x", *leaves[1:size1]]), root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof[:-1], root1, root2)
        bit = data_.draw(st.integers(min_value=0, max_value=len(proof) * 256 - 1))
        flipped = list(proof)
        flipped[bit // 256] = _flip(flipped[bit // 256], bit % 256)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, flipped, root1, root2)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=0, max_value=600), cut=st.integers(min_value=0, max_value=600))
def test_a_compact_range_resumed_anywhere_builds_the_same_tree(size: int, cut: int) -> None:
    cut = min(cut, size)
    hashes = [leaf_hash(x) for x in data(size)]
    first = CompactRange()
    first.extend(hashes[:cut])
    resumed = CompactRange.resume(first.size, first.edge)
    resumed.extend(hashes[cut:])
    assert resumed.root() == mth(data(size))
    assert len(resumed.edge) == size.bit_count()


@given(start=st.integers(min_value=0, max_value=10_000), length=st.integers(1, 10_000))
def test_range_nodes_tile_the_range_with_aligned_complete_nodes(start: int, length: int) -> None:
    position = start
    for level, index in range_nodes(start, start + length):
        assert index << level == position
        position += 1 << level
    assert position == start + length


def test_node_hash_is_the_prefixed_pair() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert fold([a, b]) == node_hash(a, b)


def _flip(value: bytes, bit: int) -> bytes:
    raw = bytearray(value)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)
