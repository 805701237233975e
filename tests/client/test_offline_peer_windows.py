"""Offline peer authentication (``OfflinePeerAuth``) without a broker: each peer's token
is a name the check maps to its registered key, so the clock and identity rules are seen
alone - the hello's date within the window either way, the finish within the window of
the answer, and a finish bound to the initiator the hello named and the responder that
sealed its cookie."""

from __future__ import annotations

import nacl.signing
import pytest
from tests.client.peer_support import CHANNEL, START, TD, WINDOW, Clock, Fleet, Token

from tasklease.client import PeerAuthenticationFailed
from tasklease.rules import peerauth as rules
from tasklease.rules.binding import MemoryProofLedger


def test_a_hello_is_answered_only_within_the_window_of_its_date_either_way() -> None:
    fleet, alice_clock, bob_clock = Fleet(), Clock(), Clock()
    alice, bob = fleet.peer("alice", alice_clock), fleet.peer("bob", bob_clock)
    for offset, answered in ((WINDOW, True), (-WINDOW, True), (WINDOW + 1, False),
                             (-WINDOW - 1, False)):  # fmt: skip
        bob_clock.now = START + offset  # the hello is dated START by Alice's clock
        hello = alice.hello(bob.agent_id, channel=CHANNEL)
        if answered:
            assert rules.parse_answer(bob.answer(hello, channel=CHANNEL)).token == "token-bob"
        else:
            with pytest.raises(PeerAuthenticationFailed) as refused:
                bob.answer(hello, channel=CHANNEL)
            assert refused.value.reason == "the hello is too old or dated in the future"


def test_a_finish_is_accepted_only_within_the_window_of_the_answer() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    finishes = []
    for _ in range(2):
        answer = bob.answer(alice.hello(bob.agent_id, channel=CHANNEL), channel=CHANNEL)
        finishes.append(alice.finish(answer)[0])
    clock.now = START + WINDOW  # the last instant
    assert bob.accept(finishes[0]).agent_id == alice.agent_id
    clock.now = START + WINDOW + 0.5
    with pytest.raises(PeerAuthenticationFailed) as refused:
        bob.accept(finishes[1])
    assert refused.value.reason == "the finish came after the window"


def test_a_finish_is_the_named_initiators_alone() -> None:
    # Carol sees Alice's hello and Bob's answer go by, and finishes Alice's run herself,
    # with her own token and key: Bob asked Alice, and must not end up with Carol.
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    carol_key = nacl.signing.SigningKey.generate()
    fleet.tokens["token-carol"] = Token(f"{TD}/carol", carol_key)
    hello = rules.parse_hello(alice.hello(bob.agent_id, channel=CHANNEL))
    answer = rules.parse_answer(bob.answer(rules.hello_message(hello), channel=CHANNEL))
    transcript = rules.peer_transcript(
        "initiator", initiator=hello.initiator, responder=hello.responder,
        initiator_nonce=hello.nonce, responder_nonce=answer.nonce, iat=hello.iat,
        channel=CHANNEL, responder_token=answer.token, initiator_token="token-carol",
    )  # fmt: skip
    hijacked = rules.Finish(
        answer.nonce, "token-carol", rules.sign_transcript(transcript, carol_key), answer.cookie
    )
    with pytest.raises(PeerAuthenticationFailed) as refused:
        bob.accept(rules.finish_message(hijacked))
    assert refused.value.reason == "the finish comes from another agent than the hello"


def test_a_finish_is_accepted_only_by_the_responder_that_answered() -> None:
    # Bob and Dave share a challenge key (and so the replay ledger): Alice's finish to Bob
    # relayed to Dave opens there, but Alice never authenticated Dave.
    fleet, clock = Fleet(), Clock()
    shared = {"challenge_key": b"\x11" * rules.CHALLENGE_KEY_BYTES, "replay": MemoryProofLedger()}
    alice = fleet.peer("alice", clock)
    bob, dave = fleet.peer("bob", clock, **shared), fleet.peer("dave", clock, **shared)
    answer = bob.answer(alice.hello(bob.agent_id, channel=CHANNEL), channel=CHANNEL)
    finish, _ = alice.finish(answer)
    with pytest.raises(PeerAuthenticationFailed) as refused:
        dave.accept(finish)
    assert refused.value.reason == "the finish answers another agent's challenge"
    assert bob.accept(finish).agent_id == alice.agent_id


@pytest.mark.parametrize("iat", [10**400, -(10**400)], ids=["ahead", "behind"])
def test_a_hello_dated_where_no_float_reaches_is_refused_as_outside_the_window(iat: int) -> None:
    # Anyone can send a hello: its date is compared with the clock, never subtracted from
    # it (an integer past every float raised OverflowError in the responder's code).
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    hello = rules.parse_hello(alice.hello(bob.agent_id, channel=CHANNEL))
    forged = rules.Hello(hello.initiator, hello.responder, hello.nonce, iat)
    with pytest.raises(PeerAuthenticationFailed) as refused:
        bob.answer(rules.hello_message(forged), channel=CHANNEL)
    assert refused.value.reason == "the hello is too old or dated in the future"
