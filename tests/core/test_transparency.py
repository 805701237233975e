# Would fail if: a checkpoint were signed with a token signing key or named another
# origin, a proof from the broker did not verify against its own checkpoint, a
# checkpoint became final with fewer cosignatures than the quorum, a witness's refusal
# (a fork) still made it final, or a rotated log key left old checkpoints unverifiable.
"""The transparent audit log in the core: the log key, checkpoints, proofs and witness
quorum, on a broker over a memory store. The witnesses here run the real witness
decision (``rules.witness``) in process; tests/cli runs them as HTTP servers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from tasklease.core.errors import InvalidRequest, NotFound, Unavailable
from tasklease.core.keys import load_or_create_keyring
from tasklease.core.transparency import PushResult
from tasklease.keystore.plaintext import PlaintextKeyProvider
from tasklease.rules.auditchain import event_leaf
from tasklease.rules.merkle import root_of, verify_consistency, verify_inclusion
from tasklease.rules.note import (
    COSIGNATURE,
    NoteError,
    VerifierKey,
    parse_checkpoint,
    parse_note,
    verify_cosignature,
    verify_note,
)
from tasklease.rules.witness import WitnessState, add_checkpoint, parse_request


class LocalWitness:
    """A witness's decision, run in process: what ``tasklease audit witness`` serves."""

    def __init__(self, name: str, logs: dict[str, list[VerifierKey]]) -> None:
        self.signing = nacl.signing.SigningKey.generate()
        self.key = VerifierKey(name, COSIGNATURE, bytes(self.signing.verify_key))
        self.logs = logs
        self.state = WitnessState()
        self.answers: list[int] = []
        self.url = f"http://{name}"

    @property
    def entry(self) -> str:
        return f"{self.url} {self.key.vkey}"

    def __call__(self, url: str, body: bytes) -> PushResult:
        assert url == self.url
        answer = add_checkpoint(
            parse_request(body),
            self.state,
            logs=self.logs,
            name=self.key.name,
            public_key=self.key.public_key,
            sign=lambda m: bytes(self.signing.sign(m).signature),
            now=1_800_000_000,
        )
        self.state = answer.state
        self.answers.append(answer.status)
        return PushResult(answer.status, answer.content_type, answer.body)


def events(broker: Any, n: int) -> None:
    from tasklease.core.auditformat import AuditEntry

    broker.kernel.record(*[AuditEntry("test_event", detail=str(i)) for i in range(n)])


def test_a_checkpoint_is_the_tree_signed_by_the_log_key(broker: Any) -> None:
    with pytest.raises(NotFound):
        broker.transparency.checkpoint()
    events(broker, 5)
    record = broker.transparency.sign_if_due(force=True)
    assert record is not None and record.size == 5
    note = parse_note(broker.transparency.checkpoint().note)
    keys = broker.transparency.log_keys()
    assert verify_note(note, keys) == [keys[0]]
    checkpoint = parse_checkpoint(note.text)
    assert checkpoint.origin == broker.config.audit_origin == "tasklease/audit"
    leaves = [event_leaf(e.hash) for e in broker.store.iter_audit()]
    assert checkpoint.root == root_of(leaves)
    # The log key is not a token signing key.
    assert keys[0].public_key not in [
        broker.keyring.public_key(kid) for kid in broker.keyring.kids()
    ]


def test_proofs_verify_against_checkpoints(broker: Any) -> None:
    events(broker, 3)
    old = parse_checkpoint(parse_note(broker.transparency.sign_if_due(force=True).note).text)
    events(broker, 40)
    new = parse_checkpoint(parse_note(broker.transparency.sign_if_due(force=True).note).text)
    assert (old.size, new.size) == (3, 43)
    verify_consistency(3, 43, broker.transparency.consistency(3, 43), old.root, new.root)
    for event in broker.store.iter_audit():
        proof = broker.transparency.inclusion(event.index, new.size)
        verify_inclusion(event_leaf(event.hash), event.index, new.size, proof, new.root)
    with pytest.raises(InvalidRequest):
        broker.transparency.inclusion(43, 43)
    with pytest.raises(InvalidRequest):
        broker.transparency.consistency(3, 44)


def test_checkpoints_are_signed_when_due_and_only_when_the_tree_grew(make_broker: Any) -> None:
    broker = make_broker(audit_checkpoint_events=10, audit_checkpoint_interval=3600)
    assert broker.transparency.sign_if_due() is not None  # the first: due at once
    assert broker.transparency.sign_if_due() is None  # nothing appended, interval not over
    events(broker, 9)
    assert broker.transparency.sign_if_due() is None
    events(broker, 1)
    assert broker.transparency.sign_if_due().size == 10
    assert broker.transparency.sign_if_due(force=True) is not None  # same size, forced


def test_a_checkpoint_is_final_with_the_quorum_of_witness_cosignatures(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    witnesses = [LocalWitness(f"w{i}.example", logs) for i in range(3)]
    broker = make_broker(audit_witnesses=tuple(w.entry for w in witnesses), audit_witness_quorum=2)
    logs["tasklease/audit"] = broker.transparency.log_keys()
    by_url = {w.url: w for w in witnesses}

    def push(url: str, body: bytes) -> PushResult:
        return by_url[url](url, body)

    events(broker, 4)
    broker.transparency.sign_if_due(force=True)
    with pytest.raises(NotFound):  # signed, but no witness has seen it yet
        broker.transparency.checkpoint()
    final = broker.transparency.publish(push)
    assert final is not None and final.size == 4
    note = parse_note(broker.transparency.checkpoint().note)
    assert [verify_cosignature(note, w.key) for w in witnesses] == [1_800_000_000] * 3
    # Later checkpoints come with a consistency proof from what each witness holds.
    events(broker, 30)
    broker.transparency.sign_if_due(force=True)
    assert broker.transparency.publish(push).size == 34
    assert all(w.state.size == 34 for w in witnesses)
    assert all(w.answers == [200, 200] for w in witnesses)


def test_a_witness_that_lost_its_place_is_told_apart_from_a_fork(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    witness = LocalWitness("w.example", logs)
    broker = make_broker(audit_witnesses=(witness.entry,), audit_witness_quorum=1)
    logs["tasklease/audit"] = broker.transparency.log_keys()
    events(broker, 6)
    broker.transparency.sign_if_due(force=True)
    assert broker.transparency.publish(witness) is not None
    # A broker restarted knows nothing of the witness: it asks from 0, is told 6 (409).
    restarted = dataclasses.replace(witness.state)
    broker.transparency._witness_sizes.clear()
    events(broker, 2)
    broker.transparency.sign_if_due(force=True)
    assert broker.transparency.publish(witness).size == 8
    assert witness.answers == [200, 409, 200]
    assert restarted.size == 6


def test_too_few_cosignatures_leave_the_previous_final_checkpoint(make_broker: Any) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    good, stranger = LocalWitness("good.example", logs), LocalWitness("odd.example", {})
    broker = make_broker(audit_witnesses=(good.entry, stranger.entry), audit_witness_quorum=2)
    logs["tasklease/audit"] = broker.transparency.log_keys()
    by_url = {good.url: good, stranger.url: stranger}
    events(broker, 2)
    broker.transparency.sign_if_due(force=True)
    assert broker.transparency.publish(lambda u, b: by_url[u](u, b)) is None
    assert stranger.answers == [404]  # it does not witness this log
    with pytest.raises(NotFound):
        broker.transparency.checkpoint()


def test_a_rotated_log_key_signs_from_then_on_and_the_old_one_stays_published(
    broker: Any, kit: Any
) -> None:
    events(broker, 1)
    before = parse_note(broker.transparency.sign_if_due(force=True).note)
    old_keys = broker.transparency.log_keys()
    new, previous = broker.transparency.rotate_key(kit.admin(broker).claims, kit.ctx)
    assert previous == old_keys[0].vkey and new != previous
    keys = broker.transparency.log_keys()
    assert [k.vkey for k in keys] == [new, previous]
    after = parse_note(broker.transparency.sign_if_due(force=True).note)
    assert verify_note(after, keys) == [keys[0]]
    with pytest.raises(NoteError):
        verify_note(after, old_keys)
    assert verify_note(before, keys) == [keys[1]]
    rotated = [e for e in broker.store.iter_audit() if e.event_type == "audit_log_key_rotated"]
    assert len(rotated) == 1 and "by=admin" in rotated[0].detail


def test_witness_configuration_is_checked(make_broker: Any) -> None:
    key = VerifierKey("w", COSIGNATURE, bytes(32)).vkey
    with pytest.raises(ValueError, match="audit_witnesses"):
        make_broker(audit_witnesses=(f"ftp://w {key}",))
    with pytest.raises(ValueError, match="audit_witness_quorum"):
        make_broker(audit_witnesses=(f"http://w {key}",), audit_witness_quorum=2)
    # One public key under two names is one witness: refused, not a quorum of two.
    same = VerifierKey("v", COSIGNATURE, bytes(32)).vkey
    for second in (key, same):
        with pytest.raises(ValueError, match="public key of an earlier entry"):
            make_broker(
                audit_witnesses=(f"http://w {key}", f"http://v {second}"), audit_witness_quorum=2
            )
    with pytest.raises(ValueError, match="audit_log_origin"):
        make_broker(audit_log_origin="has space")


# Would fail if: a checkpoint held back for want of cosignatures were logged without the
# log it is of: with tenants, one process signs every tenant's log, and the platform's
# operator must know which log to give the witnesses (a tenant created after they were
# set up is unknown to them).
def test_a_checkpoint_short_of_its_quorum_is_logged_with_its_log(
    make_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tasklease.storage import MemoryStore

    stranger = LocalWitness("odd.example", {})
    acme = make_broker(
        store=MemoryStore().for_tenant("acme"),
        issuer="tasklease/t/acme",
        audit_witnesses=(stranger.entry,),
        audit_witness_quorum=1,
    )
    events(acme, 2)
    acme.transparency.sign_if_due(force=True)
    with caplog.at_level("WARNING", logger="tasklease.audit"):
        assert acme.transparency.publish(stranger) is None
    said = [r.getMessage() for r in caplog.records if "not final" in r.getMessage()]
    assert said and "tasklease/t/acme/audit" in said[0], said


def test_each_tenant_has_its_own_log(make_broker: Any) -> None:
    from tasklease.storage import MemoryStore

    store = MemoryStore()
    default = make_broker(store=store)
    acme = make_broker(store=store.for_tenant("acme"), issuer="tasklease/t/acme")
    events(default, 3)
    events(acme, 5)
    mine = parse_checkpoint(parse_note(default.transparency.sign_if_due(force=True).note).text)
    theirs = parse_checkpoint(parse_note(acme.transparency.sign_if_due(force=True).note).text)
    assert (mine.origin, mine.size) == ("tasklease/audit", 3)
    assert (theirs.origin, theirs.size) == ("tasklease/t/acme/audit", 5)
    assert mine.root != theirs.root
    # An origin set explicitly is the default tenant's; a tenant's is beneath it.
    named = make_broker(store=store.for_tenant("beta"), audit_log_origin="broker.example/log")
    assert named.transparency.origin == "broker.example/log/t/beta"
    verify_note(parse_note(acme.transparency.checkpoint().note), acme.transparency.log_keys())
    with pytest.raises(NoteError):  # each tenant's log key is its own
        verify_note(
            parse_note(acme.transparency.checkpoint().note), default.transparency.log_keys()
        )


def test_with_no_quorum_a_checkpoint_is_final_at_once_and_cosigned_later(
    make_broker: Any,
) -> None:
    logs: dict[str, list[VerifierKey]] = {}
    witness = LocalWitness("w.example", logs)
    broker = make_broker(audit_witnesses=(witness.entry,), audit_witness_quorum=0)
    logs["tasklease/audit"] = broker.transparency.log_keys()
    events(broker, 3)
    broker.transparency.sign_if_due(force=True)
    first = parse_note(broker.transparency.checkpoint().note)
    assert verify_cosignature(first, witness.key) is None
    assert broker.transparency.publish(witness) is not None
    later = parse_note(broker.transparency.checkpoint().note)
    assert later.text == first.text
    assert verify_cosignature(later, witness.key) == 1_800_000_000
    assert broker.transparency.publish(witness) is None  # nothing new to take


def test_a_log_key_rotation_that_cannot_be_audited_changes_nothing(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """Found by review: the new log key was written before ``audit_log_key_rotated``;
    when that write failed the caller heard "nothing was changed", yet the next process
    to load ``<key_dir>/log`` (another worker, a restart) signed checkpoints with it."""
    from tests.core.test_audit import FlakyStore

    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, PlaintextKeyProvider())
    store = FlakyStore()

    def worker() -> Any:  # a process sharing the key directory and the store
        return make_broker(store=store, keyring=ring, key_dir=str(keys))

    first = worker()
    before = [k.vkey for k in first.transparency.log_keys()]
    store.failing = True
    with pytest.raises(Unavailable) as info:
        first.transparency.rotate_key(kit.admin(first).claims, kit.ctx)
    assert "nothing was changed" in info.value.detail
    store.failing = False
    assert [k.vkey for k in first.transparency.log_keys()] == before
    assert not first.transparency.refresh_keys()
    assert [k.vkey for k in worker().transparency.log_keys()] == before
    assert not [p for p in (keys / "log").iterdir() if p.name.startswith(".pending-")]
    # Storage is back: a retry rotates, audited, and the other processes follow.
    new, previous = first.transparency.rotate_key(kit.admin(first).claims, kit.ctx)
    assert previous == before[0]
    assert [k.vkey for k in worker().transparency.log_keys()] == [new, previous]
    rotated = [e for e in store.iter_audit() if e.event_type == "audit_log_key_rotated"]
    assert len(rotated) == 1 and f"new={new} previous={previous}" in rotated[0].detail
