# Would fail if: a witness key of another type than a cosignature key were taken, a
# process that does not hold the checkpoint lease took checkpoints to the witnesses or
# stored one it signed after losing the lease, a witness holding a larger tree than ours
# were asked again as if nothing was wrong, a witness's cosignature that does not verify
# were kept (and served in the final checkpoint), or a checkpoint of a tree that did not
# grow were signed again; or if a witness that could not be reached were asked again at
# once or never, a round no witness answered replaced the cosignatures already served,
# a line a witness answered in another witness's name were taken as its own, or a
# rotated log key waited for the next due round to sign its first checkpoint.
"""The guards of the transparent audit log (core.transparency) that its main tests do not
reach: the witness key's type, the checkpoint lease between processes sharing a store,
and what a witness answers that must not be believed."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tests.core.test_transparency import LocalWitness, events

from tasklease.core.transparency import CHECKPOINT_LEASE, RETRY_WITNESSES, PushResult, Witness
from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    NoteError,
    Signature,
    VerifierKey,
    parse_note,
    verify_cosignature,
    verify_note,
)
from tasklease.rules.witness import SIZE_CONTENT_TYPE, parse_request
from tasklease.storage import MemoryStore


def test_a_witness_key_must_be_a_cosignature_key() -> None:
    cosigner = VerifierKey("w.example", COSIGNATURE, bytes(range(32)))
    assert Witness.parse(f"http://w.example/ {cosigner.vkey}") == Witness(
        "http://w.example", cosigner
    )
    # The same key as a note signer (type 0x01): a log key, not a witness's.
    signer = VerifierKey("w.example", ED25519, bytes(range(32)))
    with pytest.raises(NoteError, match="cosignature"):
        Witness.parse(f"http://w.example {signer.vkey}")


def _pair(make_broker: Any, **config: Any) -> tuple[Any, Any]:
    """Two brokers (two processes) on one store: the checkpoint lease is between them."""
    store = MemoryStore()
    return make_broker(store=store, **config), make_broker(store=store, **config)


def test_only_the_process_holding_the_checkpoint_lease_publishes(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    witness = LocalWitness("w.example", logs)
    first, second = _pair(make_broker, audit_witnesses=(witness.entry,), audit_witness_quorum=1)
    logs["tasklease/audit"] = first.transparency.log_keys()
    events(first, 3)
    assert first.transparency.sign_if_due(force=True) is not None
    assert second.transparency.sign_if_due(force=True) is None  # the lease is the first's
    assert second.transparency.publish(witness, now=0.0) is None
    assert witness.answers == []  # the second process took nothing to the witness
    final = first.transparency.publish(witness, now=0.0)
    assert final is not None and final.size == 3
    assert witness.answers == [200]


def test_a_checkpoint_signed_after_the_lease_was_lost_is_not_stored(make_broker: Any) -> None:
    first, second = _pair(make_broker)
    events(first, 4)
    transparency = first.transparency
    ring = transparency.ring
    taken: list[Any] = []

    class LeaseLostWhileSigning:
        """The first process's log key; while it signs, the lease passes to the second."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ring, name)

        def sign_detached(self, message: bytes) -> bytes:
            if not taken:
                assert first.kernel.release_lease(CHECKPOINT_LEASE, first.instance_id)
                taken.append(second.transparency.sign_if_due(force=True))
            return bytes(ring.sign_detached(message))

    transparency.ring = LeaseLostWhileSigning()
    assert transparency.sign_if_due(force=True) is None
    [theirs] = taken
    assert theirs is not None and theirs.size == 4
    stored = first.store.get_checkpoint("signed")
    assert stored == theirs  # the checkpoint of the process holding the lease stands
    verify_note(parse_note(stored.note), second.transparency.log_keys())


def test_a_witness_holding_a_larger_tree_is_not_asked_from_there(
    make_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = LocalWitness("w.example", {}).key
    broker = make_broker(audit_witnesses=(f"http://w.example {key.vkey}",), audit_witness_quorum=1)
    asked: list[int] = []

    def ahead(url: str, body: bytes) -> PushResult:
        # A witness that cosigned 10 events of this log: it was rolled back or forked.
        asked.append(parse_request(body).old)
        return PushResult(409, SIZE_CONTENT_TYPE, b"10\n")

    events(broker, 6)
    broker.transparency.sign_if_due(force=True)
    with caplog.at_level(logging.ERROR, logger="tasklease.audit"):
        assert broker.transparency.publish(ahead, now=0.0) is None
    assert asked == [0]  # told 10, it asks nothing more of it
    assert "larger than ours (6)" in caplog.text
    assert "rolled back or forked" in caplog.text
    assert broker.transparency.witness_sizes() == {"http://w.example": 10}
    # Asked again later, it is not pushed to at all: 10 is still larger than 6.
    assert broker.transparency.publish(ahead, now=60.0) is None
    assert asked == [0]


def test_a_cosignature_that_does_not_verify_is_not_kept(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    good, liar = LocalWitness("good.example", logs), LocalWitness("liar.example", logs)
    broker = make_broker(audit_witnesses=(good.entry, liar.entry), audit_witness_quorum=1)
    logs["tasklease/audit"] = broker.transparency.log_keys()

    def push(url: str, body: bytes) -> PushResult:
        if url == good.url:
            return good(url, body)
        # The liar answers a line under its own name and key ID that signs nothing.
        forged = Signature(liar.key.name, liar.key.key_id, (1).to_bytes(8, "big") + bytes(64))
        return PushResult(200, "text/plain; charset=utf-8", forged.line.encode())

    events(broker, 5)
    broker.transparency.sign_if_due(force=True)
    final = broker.transparency.publish(push, now=0.0)
    assert final is not None and final.size == 5
    note = parse_note(final.note)
    assert verify_cosignature(note, good.key) == 1_800_000_000
    # The forged line is not served: a client trusting the liar's key reads the final
    # checkpoint as not cosigned by it, not as one it cannot verify.
    assert verify_cosignature(note, liar.key) is None
    assert [s.name for s in note.signatures] == ["tasklease/audit", "good.example"]
    assert broker.transparency.witness_sizes() == {good.url: 5}


def test_a_tree_that_did_not_grow_is_not_signed_again(make_broker: Any) -> None:
    first = make_broker()
    events(first, 3)
    signed = first.transparency.sign_now()
    assert signed is not None and signed.size == 3
    assert first.transparency.sign_now() is None
    assert first.store.get_checkpoint("signed") == signed
    events(first, 1)
    grown = first.transparency.sign_now()
    assert grown is not None and grown.size == 4
    assert first.transparency.sign_now() is None
    assert first.store.get_checkpoint("signed") == grown


def test_a_witness_that_could_not_be_reached_is_asked_again_after_a_pause(
    make_broker: Any,
) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    up, flaky = LocalWitness("up.example", logs), LocalWitness("flaky.example", logs)
    broker = make_broker(audit_witnesses=(up.entry, flaky.entry), audit_witness_quorum=2)
    logs["tasklease/audit"] = broker.transparency.log_keys()
    by_url = {up.url: up, flaky.url: flaky}
    down = {flaky.url}

    def push(url: str, body: bytes) -> PushResult:
        if url in down:
            raise OSError("connection refused")
        return by_url[url](url, body)

    events(broker, 3)
    broker.transparency.sign_if_due(force=True)
    assert broker.transparency.publish(push, now=100.0) is None  # 1 of the 2 needed
    down.clear()
    assert broker.transparency.publish(push, now=100.0 + RETRY_WITNESSES / 2) is None
    assert flaky.answers == []  # not asked again before the pause is over
    final = broker.transparency.publish(push, now=100.0 + RETRY_WITNESSES)
    assert final is not None and final.size == 3  # nor left out once it is
    assert flaky.answers == [200]
    note = parse_note(final.note)
    assert all(verify_cosignature(note, w.key) == 1_800_000_000 for w in (up, flaky))


def test_cosignatures_already_served_stay_when_no_witness_answers(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    first, second = LocalWitness("one.example", logs), LocalWitness("two.example", logs)
    broker = make_broker(audit_witnesses=(first.entry, second.entry), audit_witness_quorum=0)
    logs["tasklease/audit"] = broker.transparency.log_keys()
    down = {second.url}

    def push(url: str, body: bytes) -> PushResult:
        if url in down:
            raise OSError("connection refused")
        return first(url, body)

    events(broker, 3)
    broker.transparency.sign_if_due(force=True)  # final at once: no quorum
    assert broker.transparency.publish(push, now=0.0) is not None
    served = broker.transparency.checkpoint()
    assert verify_cosignature(parse_note(served.note), first.key) == 1_800_000_000
    down.add(first.url)  # both unreachable on the next round
    assert broker.transparency.publish(push, now=60.0) is None
    assert broker.transparency.checkpoint() == served  # first's cosignature still served


def test_only_a_witness_s_own_cosignature_is_taken_from_its_answer(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    relay, other = LocalWitness("relay.example", logs), LocalWitness("other.example", logs)
    broker = make_broker(audit_witnesses=(relay.entry, other.entry), audit_witness_quorum=2)
    logs["tasklease/audit"] = broker.transparency.log_keys()

    def push(url: str, body: bytes) -> PushResult:
        if url == other.url:
            return other(url, body)
        answer = relay(url, body)
        # Ahead of its own valid cosignature, a line in the other witness's name.
        forged = Signature(other.key.name, other.key.key_id, (1).to_bytes(8, "big") + bytes(64))
        return PushResult(answer.status, answer.content_type, forged.line.encode() + answer.body)

    events(broker, 2)
    broker.transparency.sign_if_due(force=True)
    final = broker.transparency.publish(push, now=0.0)
    assert final is not None and final.size == 2
    note = parse_note(final.note)
    assert [s.name for s in note.signatures] == [
        "tasklease/audit",
        *(w.key.name for w in (relay, other)),
    ]
    assert all(verify_cosignature(note, w.key) == 1_800_000_000 for w in (relay, other))


def test_a_rotated_log_key_signs_at_the_next_round_not_the_next_due_one(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker(audit_checkpoint_events=10, audit_checkpoint_interval=3600)
    events(broker, 10)
    assert broker.transparency.sign_if_due() is not None
    assert broker.transparency.sign_if_due() is None  # nothing due
    new, _ = broker.transparency.rotate_key(kit.admin(broker).claims, kit.ctx)
    signed = broker.transparency.sign_if_due()  # one event since, yet due: a new key
    assert signed is not None and signed.size == broker.store.audit_tree().size
    assert verify_note(parse_note(signed.note), [VerifierKey.parse(new)])
