# Would fail if: a witness cosigned a checkpoint its log did not sign, one that does not
# extend the checkpoint it cosigned before (a fork), one from a size it does not hold, or
# answered any of these with another status than C2SP tlog-witness gives them; or if one
# witness key counted more than once towards a quorum.
"""A witness's add-checkpoint decision (C2SP tlog-witness), case by case, on real trees."""

from __future__ import annotations

import nacl.signing
import pytest

from tasklease.rules.merkle import EMPTY_ROOT, CompactRange, consistency_plan, fold, leaf_hash
from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    Checkpoint,
    Note,
    Signature,
    VerifierKey,
    checkpoint_note,
    cosign,
    parse_note,
    verify_cosignature,
)
from tasklease.rules.witness import (
    SIZE_CONTENT_TYPE,
    Answer,
    WitnessError,
    WitnessState,
    add_checkpoint,
    cosigned_by,
    format_request,
    parse_cosignatures,
    parse_request,
)
from tasklease.verify import AuditProofError, verify_checkpoint

ORIGIN = "broker.example/audit"
LOG = nacl.signing.SigningKey.generate()
LOG_KEY = VerifierKey(ORIGIN, ED25519, bytes(LOG.verify_key))
WITNESS = nacl.signing.SigningKey.generate()
WITNESS_KEY = VerifierKey("witness.example", COSIGNATURE, bytes(WITNESS.verify_key))


def tree(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def root(leaves: list[bytes]) -> bytes:
    compact = CompactRange()
    compact.extend(leaves)
    return compact.root()


def signed(size: int, leaves: list[bytes], key: nacl.signing.SigningKey = LOG) -> Note:
    checkpoint = Checkpoint(ORIGIN, size, root(leaves[:size]))
    return checkpoint_note(
        checkpoint, bytes(key.verify_key), lambda m: bytes(key.sign(m).signature)
    )


def consistency(old: list[bytes], new: list[bytes]) -> list[bytes]:
    """The proof, computed from the nodes of ``new`` as the broker does (core.audittree)."""

    def node(level: int, index: int) -> bytes:
        return root(new[index << level : (index + 1) << level])

    return [fold([node(*n) for n in part]) for part in consistency_plan(len(old), len(new))]


def ask(state: WitnessState, old: int, proof: list[bytes], note: Note) -> Answer:
    request = parse_request(format_request(old, proof, note))
    return add_checkpoint(
        request,
        state,
        logs={ORIGIN: [LOG_KEY]},
        name=WITNESS_KEY.name,
        public_key=WITNESS_KEY.public_key,
        sign=lambda m: bytes(WITNESS.sign(m).signature),
        now=1_800_000_000,
    )


def test_a_log_is_cosigned_from_nothing_then_as_it_grows() -> None:
    leaves = tree(20)
    first = ask(WitnessState(), 0, [], signed(7, leaves))
    assert first.status == 200 and first.state.size == 7
    (line,) = parse_cosignatures(first.body)
    assert (
        verify_cosignature(signed(7, leaves).with_signatures([line]), WITNESS_KEY) == 1_800_000_000
    )
    grown = ask(first.state, 7, consistency(leaves[:7], leaves), signed(20, leaves))
    assert grown.status == 200 and grown.state.size == 20
    assert parse_note(grown.state.note).text == signed(20, leaves).text
    again = ask(grown.state, 20, [], signed(20, leaves))  # the same checkpoint: cosigned again
    assert again.status == 200


def test_a_fork_is_refused_and_the_state_kept() -> None:
    leaves = tree(20)
    state = ask(WitnessState(), 0, [], signed(10, leaves)).state
    # The log rewrote leaf 5 and regrew: a larger tree that does not extend the first.
    rewritten = [*leaves[:5], leaf_hash(b"rewritten"), *leaves[6:]]
    for proof in (consistency(leaves[:10], rewritten), consistency(leaves[:10], leaves)):
        answer = ask(state, 10, proof, signed(20, rewritten))
        assert answer.status == 422 and "not consistent" in answer.reason
        assert answer.state == state
    same_size = ask(state, 10, [], signed(10, rewritten))
    assert same_size.status == 422 and same_size.state == state


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unknown log", 404),
        ("another key", 403),
        ("old above size", 400),
        ("wrong old", 409),
        ("proof from zero", 422),
        ("empty tree, other root", 422),
    ],
)
def test_each_refusal_has_its_status(case: str, status: int) -> None:
    leaves = tree(12)
    state = ask(WitnessState(), 0, [], signed(4, leaves)).state
    stranger = nacl.signing.SigningKey.generate()
    if case == "unknown log":
        note = checkpoint_note(
            Checkpoint("other.example/log", 4, root(leaves[:4])),
            bytes(LOG.verify_key),
            lambda m: bytes(LOG.sign(m).signature),
        )
        answer = ask(state, 4, [], note)
    elif case == "another key":
        answer = ask(state, 4, consistency(leaves[:4], leaves), signed(12, leaves, stranger))
    elif case == "old above size":
        answer = ask(state, 13, [], signed(12, leaves))
    elif case == "wrong old":
        answer = ask(state, 2, consistency(leaves[:2], leaves), signed(12, leaves))
        assert answer.body == b"4\n" and answer.content_type == SIZE_CONTENT_TYPE
    elif case == "proof from zero":
        answer = ask(WitnessState(), 0, [EMPTY_ROOT], signed(12, leaves))
    else:
        empty = checkpoint_note(
            Checkpoint(ORIGIN, 0, root(leaves[:3])),
            bytes(LOG.verify_key),
            lambda m: bytes(LOG.sign(m).signature),
        )
        answer = ask(WitnessState(), 0, [], empty)
    assert answer.status == status, answer
    assert answer.state.size in (0, 4)


def test_malformed_requests_are_refused() -> None:
    note = str(signed(1, tree(1)))
    for body in (
        b"old 1\n" + note.encode(),  # no empty line
        ("old 01\n\n" + note).encode(),
        ("old 1\nnot base64!\n\n" + note).encode(),
        ("old 1\nAAAA\n\n" + note).encode(),  # a 3-byte hash
        ("old 1\n" + "\n".join(["A" * 43 + "="] * 64) + "\n\n" + note).encode(),
        b"\xff\n\n",
    ):
        with pytest.raises(WitnessError):
            parse_request(body)


def cosignature(note: Note, name: str, key: nacl.signing.SigningKey) -> Signature:
    return cosign(
        note.text,
        name,
        bytes(key.verify_key),
        1_800_000_000,
        lambda m: bytes(key.sign(m).signature),
    )


def test_a_witness_listed_twice_counts_once() -> None:
    note = signed(3, tree(3))
    note = note.with_signatures([cosignature(note, WITNESS_KEY.name, WITNESS)])
    assert cosigned_by(note, [WITNESS_KEY, WITNESS_KEY]) == [(WITNESS_KEY, 1_800_000_000)]


def test_one_private_key_cosigning_under_two_names_is_one_witness() -> None:
    first = VerifierKey("first.example", COSIGNATURE, WITNESS_KEY.public_key)
    second = VerifierKey("second.example", COSIGNATURE, WITNESS_KEY.public_key)
    note = signed(3, tree(3))
    both = note.with_signatures(
        [cosignature(note, first.name, WITNESS), cosignature(note, second.name, WITNESS)]
    )
    assert cosigned_by(both, [first, second]) == [(first, 1_800_000_000)]
    # The key counts with the first name under which it cosigned validly.
    only_second = note.with_signatures([cosignature(note, second.name, WITNESS)])
    assert cosigned_by(only_second, [first, second]) == [(second, 1_800_000_000)]


@pytest.mark.parametrize("case", ["vkey twice", "vkey and object", "two names"])
def test_a_quorum_of_two_is_not_met_by_one_witness(case: str) -> None:
    other = VerifierKey("second.example", COSIGNATURE, WITNESS_KEY.public_key)
    witnesses: list[str | VerifierKey] = {
        "vkey twice": [WITNESS_KEY.vkey, WITNESS_KEY.vkey],
        "vkey and object": [WITNESS_KEY.vkey, WITNESS_KEY],
        "two names": [WITNESS_KEY.vkey, other.vkey],
    }[case]
    note = signed(3, tree(3))
    note = note.with_signatures(
        [cosignature(note, WITNESS_KEY.name, WITNESS), cosignature(note, other.name, WITNESS)]
    )
    log_keys = [LOG_KEY.vkey]
    assert verify_checkpoint(str(note), log_keys, witnesses=witnesses, quorum=1).size == 3
    with pytest.raises(AuditProofError) as refused:
        verify_checkpoint(str(note), log_keys, witnesses=witnesses, quorum=2)
    assert refused.value.reason == "checkpoint cosigned by 1 of the witnesses, 2 needed"


def test_a_quorum_of_two_is_met_by_two_witness_keys() -> None:
    second = nacl.signing.SigningKey.generate()
    second_key = VerifierKey("second.example", COSIGNATURE, bytes(second.verify_key))
    note = signed(3, tree(3))
    note = note.with_signatures(
        [cosignature(note, WITNESS_KEY.name, WITNESS), cosignature(note, second_key.name, second)]
    )
    witnesses = [WITNESS_KEY.vkey, second_key.vkey]
    assert verify_checkpoint(str(note), [LOG_KEY.vkey], witnesses=witnesses, quorum=2).size == 3
