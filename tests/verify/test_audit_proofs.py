# Would fail if: the offline audit verifier accepted a checkpoint of another origin than the
# one asked for, short of its witness quorum, or signed by no log key; an event whose
# fields were edited or whose sequence number was moved; a newer checkpoint of another
# log, or of the same size with another root (a fork at equal size), as extending an
# older one; or a proof bundle without the witness quorum it was asked for.
"""``tasklease.verify``'s audit log proofs (checkpoints, inclusion, consistency, bundles)
on a small log built here, without a broker: each check against the one edit it is for."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nacl.signing
import pytest

from tasklease.rules.auditchain import GENESIS_HASH, V2_FIELDS, event_hash, event_leaf
from tasklease.rules.merkle import CompactRange, consistency_plan, fold, inclusion_plan
from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    Checkpoint,
    Note,
    VerifierKey,
    checkpoint_note,
    cosign,
)
from tasklease.verify import (
    AuditProofError,
    verify_checkpoint,
    verify_event_inclusion,
    verify_log_consistency,
    verify_proof_bundle,
)

ORIGIN = "broker.example/audit"
LOG = nacl.signing.SigningKey(b"\x01" * 32)
LOG_KEY = VerifierKey(ORIGIN, ED25519, bytes(LOG.verify_key))
WITNESSES = [nacl.signing.SigningKey(bytes([i]) * 32) for i in (2, 3)]
WITNESS_KEYS = [
    VerifierKey(f"witness{i}.example", COSIGNATURE, bytes(k.verify_key))
    for i, k in enumerate(WITNESSES)
]


def _events(count: int) -> list[dict[str, Any]]:
    """``count`` chained v2 events, as the broker's API answers them."""
    events, prev = [], GENESIS_HASH
    for seq in range(1, count + 1):
        event: dict[str, Any] = {name: "" for name in V2_FIELDS}
        event.update(
            seq=seq,
            timestamp="2027-01-15T08:00:00Z",
            event_type="token_issued",
            detail=f"event {seq}",
            outcome="success",
            deleg_depth=0,
            tenant="default",
            prev_hash=prev,
            version=2,
        )
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


EVENTS = _events(7)
LEAVES = [event_leaf(e["hash"]) for e in EVENTS]


def _root(leaves: list[bytes]) -> bytes:
    tree = CompactRange()
    tree.extend(leaves)
    return tree.root()


def _node(level: int, index: int) -> bytes:
    return _root(LEAVES[index << level : (index + 1) << level])


def _proof(plan: list[list[tuple[int, int]]]) -> list[str]:
    return [base64.b64encode(fold([_node(*n) for n in part])).decode() for part in plan]


def _note(size: int, *, origin: str = ORIGIN, root: bytes | None = None) -> Note:
    checkpoint = Checkpoint(origin, size, _root(LEAVES[:size]) if root is None else root)
    return checkpoint_note(checkpoint, bytes(LOG.verify_key), lambda m: LOG.sign(m).signature)


def _cosigned(note: Note, count: int) -> str:
    """``note`` with the cosignatures of the first ``count`` witnesses."""
    lines = []
    for key, signer in list(zip(WITNESS_KEYS, WITNESSES, strict=True))[:count]:
        sign = signer.sign
        lines.append(
            cosign(note.text, key.name, key.public_key, 1_800_000_000, lambda m: sign(m).signature)
        )
    return str(note.with_signatures(lines))


@contextmanager
def refused(reason: str) -> Iterator[None]:
    """Expect an ``AuditProofError`` whose (internal) reason says ``reason``."""
    with pytest.raises(AuditProofError) as caught:
        yield
    assert reason in caught.value.reason, caught.value.reason


def _checkpoint(size: int) -> Checkpoint:
    return verify_checkpoint(str(_note(size)), [LOG_KEY.vkey])


def test_a_checkpoint_of_another_origin_is_refused_when_one_is_asked_for() -> None:
    other = str(_note(5, origin="other.example/audit"))
    other_key = VerifierKey("other.example/audit", ED25519, bytes(LOG.verify_key))
    assert verify_checkpoint(other, [other_key]).origin == "other.example/audit"
    with refused("not of broker.example/audit"):
        verify_checkpoint(other, [other_key], origin=ORIGIN)
    assert verify_checkpoint(str(_note(5)), [LOG_KEY], origin=ORIGIN).size == 5


def test_a_checkpoint_signed_by_no_log_key_is_refused() -> None:
    stranger = nacl.signing.SigningKey(b"\x09" * 32)
    forged = checkpoint_note(
        Checkpoint(ORIGIN, 5, _root(LEAVES[:5])),
        bytes(stranger.verify_key),
        lambda m: stranger.sign(m).signature,
    )
    with pytest.raises(AuditProofError):
        verify_checkpoint(str(forged), [LOG_KEY])


def test_a_checkpoint_short_of_its_quorum_is_refused() -> None:
    note = _note(5)
    assert verify_checkpoint(_cosigned(note, 2), [LOG_KEY], witnesses=WITNESS_KEYS, quorum=2)
    with refused("1 of the witnesses, 2 needed"):
        verify_checkpoint(_cosigned(note, 1), [LOG_KEY], witnesses=WITNESS_KEYS, quorum=2)
    with refused("0 of the witnesses, 1 needed"):
        verify_checkpoint(str(note), [LOG_KEY], witnesses=WITNESS_KEYS, quorum=1)


def test_an_event_is_proved_in_the_log_and_an_edited_one_is_not() -> None:
    checkpoint = _checkpoint(7)
    for index, event in enumerate(EVENTS):
        proof = _proof(inclusion_plan(index, 7))
        assert verify_event_inclusion(event, proof, checkpoint) == index
    proof = _proof(inclusion_plan(2, 7))
    with refused("altered"):
        verify_event_inclusion({**EVENTS[2], "detail": "nothing happened"}, proof, checkpoint)


def test_an_event_moved_to_another_sequence_number_is_not_in_the_log() -> None:
    """Event 3 renumbered 4 and rehashed: its fields give its (new) hash, but that leaf is
    not leaf 3 of the tree, whichever proof is sent."""
    checkpoint = _checkpoint(7)
    moved = {**EVENTS[2], "seq": 4}
    moved["hash"] = event_hash(moved)
    for index in (2, 3):
        with refused("not in the log"):
            verify_event_inclusion(moved, _proof(inclusion_plan(index, 7)), checkpoint)


def test_an_event_beyond_the_checkpoint_is_not_in_its_log() -> None:
    checkpoint = _checkpoint(5)
    with refused("not in the log"):
        verify_event_inclusion(EVENTS[5], _proof(inclusion_plan(5, 7)), checkpoint)


@pytest.mark.parametrize(("old", "new"), [(1, 7), (2, 7), (3, 7), (4, 7), (4, 5), (6, 7)])
def test_a_log_that_grew_is_consistent_and_one_rewritten_is_a_fork(old: int, new: int) -> None:
    proof = _proof(consistency_plan(old, new))
    verify_log_consistency(_checkpoint(old), _checkpoint(new), proof)
    rewritten = verify_checkpoint(str(_note(old, root=_root(LEAVES[1 : old + 1]))), [LOG_KEY])
    with refused("fork"):
        verify_log_consistency(rewritten, _checkpoint(new), proof)


def test_two_checkpoints_of_one_size_are_consistent_only_with_one_root() -> None:
    verify_log_consistency(_checkpoint(5), _checkpoint(5), [])
    forked = verify_checkpoint(str(_note(5, root=_root(LEAVES[1:6]))), [LOG_KEY])
    with refused("fork"):
        verify_log_consistency(_checkpoint(5), forked, [])


def test_an_empty_log_is_extended_by_any_and_a_shrunk_one_is_refused() -> None:
    empty = _checkpoint(0)
    verify_log_consistency(empty, _checkpoint(7), [])
    with refused("shrank"):
        verify_log_consistency(_checkpoint(5), _checkpoint(4), [])


def test_checkpoints_of_two_logs_are_not_consistent() -> None:
    other_key = VerifierKey("other.example/audit", ED25519, bytes(LOG.verify_key))
    other = verify_checkpoint(str(_note(7, origin="other.example/audit")), [other_key])
    with refused("two logs"):
        verify_log_consistency(_checkpoint(7), other, [])
    with refused("two logs"):
        verify_log_consistency(_checkpoint(0), other, [])


def test_a_proof_bundle_is_held_to_the_witness_quorum() -> None:
    note = _note(7)
    bundle = {"event": EVENTS[4], "proof": _proof(inclusion_plan(4, 7))}
    checkpoint, index = verify_proof_bundle(
        {**bundle, "checkpoint": _cosigned(note, 2)},
        [LOG_KEY],
        witnesses=WITNESS_KEYS,
        quorum=2,
    )
    assert (checkpoint.size, index) == (7, 4)
    with refused("2 needed"):
        verify_proof_bundle(
            {**bundle, "checkpoint": _cosigned(note, 1)},
            [LOG_KEY],
            witnesses=WITNESS_KEYS,
            quorum=2,
        )
    with refused("altered"):
        verify_proof_bundle(
            {**bundle, "event": {**EVENTS[4], "agent_id": "x"}, "checkpoint": str(note)},
            [LOG_KEY],
        )
