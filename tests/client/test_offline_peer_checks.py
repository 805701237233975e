"""Offline peer authentication (``OfflinePeerAuth``) without a broker, one check at a
time: a finish is good once for as long as its challenge is open, an answer only within
its hello's window and only once, a finish only with a signature by the initiator's own
key over this run, and an initiator keeps no more hellos open than it was given room
for."""

from __future__ import annotations

from typing import Any

import nacl.signing
import pytest
from tests.client.peer_support import CHANNEL, START, WINDOW, Clock, Fleet

from tasklease.client import OfflinePeerAuth, PeerAuthenticationFailed
from tasklease.rules import peerauth as rules


def _run(alice: OfflinePeerAuth, bob: OfflinePeerAuth) -> tuple[str, str]:
    """One handshake up to the finish: the answer Alice got, and her finish."""
    answer = bob.answer(alice.hello(bob.agent_id, channel=CHANNEL), channel=CHANNEL)
    return answer, alice.finish(answer)[0]


def test_a_finish_is_refused_again_until_its_window_has_closed() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    _, finish = _run(alice, bob)
    assert bob.accept(finish).agent_id == alice.agent_id
    for at in (START + 1, START + WINDOW):  # the cookie still opens, in its window
        clock.now = at
        with pytest.raises(PeerAuthenticationFailed) as refused:
            bob.accept(finish)
        assert refused.value.reason == "the finish answers a spent challenge (replay)"


def test_an_answer_is_taken_only_within_the_window_of_the_hello() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    in_time = bob.answer(alice.hello(bob.agent_id, channel=CHANNEL), channel=CHANNEL)
    late = bob.answer(alice.hello(bob.agent_id, channel=CHANNEL), channel=CHANNEL)
    clock.now = START + WINDOW  # the last instant
    assert alice.finish(in_time)[1].agent_id == bob.agent_id
    clock.now = START + WINDOW + 0.5
    with pytest.raises(PeerAuthenticationFailed) as refused:
        alice.finish(late)
    assert refused.value.reason == "the answer came after the window"


def test_an_answer_is_taken_once() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    answer, _ = _run(alice, bob)
    with pytest.raises(PeerAuthenticationFailed) as refused:
        alice.finish(answer)
    assert refused.value.reason == "the answer answers no open challenge (replay?)"


def _resigned(message: str, parse: Any, build: Any, key: nacl.signing.SigningKey) -> str:
    """``message`` with its signature replaced by ``key``'s over other bytes."""
    parsed = parse(message)
    forged = type(parsed)(**{**_fields(parsed), "signature": key.sign(b"another run").signature})
    return str(build(forged))


def _fields(message: Any) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__dataclass_fields__}


def test_a_finish_must_be_signed_by_the_initiators_key_over_this_run() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    alice_key = fleet.tokens["token-alice"].key
    _, finish = _run(alice, bob)
    other = nacl.signing.SigningKey.generate()
    for key in (alice_key, other):  # her key over other bytes, or another key
        with pytest.raises(PeerAuthenticationFailed):
            bob.accept(_resigned(finish, rules.parse_finish, rules.finish_message, key))
    assert bob.accept(finish).agent_id == alice.agent_id  # nothing was spent


def test_an_answer_must_be_signed_by_the_responders_key_over_this_run() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock), fleet.peer("bob", clock)
    bob_key = fleet.tokens["token-bob"].key
    answer = bob.answer(alice.hello(bob.agent_id, channel=CHANNEL), channel=CHANNEL)
    with pytest.raises(PeerAuthenticationFailed):
        alice.finish(_resigned(answer, rules.parse_answer, rules.answer_message, bob_key))
    assert alice.finish(answer)[1].agent_id == bob.agent_id  # the hello stayed open


def test_an_agent_says_hello_to_no_one_but_another_agent() -> None:
    fleet, clock = Fleet(), Clock()
    alice = fleet.peer("alice", clock)
    for peer_id in (alice.agent_id, ""):
        with pytest.raises(PeerAuthenticationFailed) as refused:
            alice.hello(peer_id, channel=CHANNEL)
        assert refused.value.reason == "an agent does not authenticate itself"


def test_open_hellos_are_bounded_and_closed_ones_make_room() -> None:
    fleet, clock = Fleet(), Clock()
    alice, bob = fleet.peer("alice", clock, capacity=2), fleet.peer("bob", clock)
    for _ in range(2):
        alice.hello(bob.agent_id, channel=CHANNEL)
    with pytest.raises(PeerAuthenticationFailed) as refused:
        alice.hello(bob.agent_id, channel=CHANNEL)
    assert refused.value.reason == "too many challenges awaiting an answer"
    clock.now = START + WINDOW + 1  # both are past their window
    alice.hello(bob.agent_id, channel=CHANNEL)


def test_a_shared_challenge_key_needs_a_shared_ledger() -> None:
    fleet, clock = Fleet(), Clock()
    with pytest.raises(ValueError, match="shared replay ledger"):
        fleet.peer("bob", clock, challenge_key=b"\x11" * rules.CHALLENGE_KEY_BYTES)
