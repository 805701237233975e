"""Offline peer mutual authentication end to end: agents registered with a real broker
process authenticate each other from their tokens and signed challenges, checked by a
tasklease.verify.Verifier (cached JWKS, the revocation feed), with no broker round trip,
even with the broker stopped; and every way to cheat it is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import RunningBroker, stop_broker
from verify_support import app_credentials, poll

from tasklease.client import Agent, AuthenticatedPeer, OfflinePeerAuth, PeerAuthenticationFailed
from tasklease.rules import jws
from tasklease.rules import peerauth as rules
from tasklease.verify import InvalidToken, RevocationStateStale, Verifier

pytestmark = pytest.mark.slow

CHANNEL = "https://bob.internal:8443/peer"


def register(broker: RunningBroker, scope: list[str], task: str = "peer-task") -> Agent:
    launch = broker.launch_token(scope)
    return Agent.register(broker.url, launch, "orch-peer", task, scope)


def verifier_for(broker: RunningBroker, **kwargs: Any) -> Verifier:
    verifier = Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker), **kwargs)
    assert verifier.start()
    return verifier


def handshake(
    alice: OfflinePeerAuth, bob: OfflinePeerAuth, bob_id: str
) -> tuple[AuthenticatedPeer, AuthenticatedPeer]:
    hello = alice.hello(bob_id, channel=CHANNEL)
    answer = bob.answer(hello, channel=CHANNEL)
    finish, bob_seen = alice.finish(answer)
    return bob_seen, bob.accept(finish)


class Clock:
    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@pytest.fixture(scope="module")
def verifier(broker: RunningBroker) -> Iterator[Verifier]:
    running = verifier_for(broker)
    yield running
    running.close()


@pytest.fixture(scope="module")
def agents(broker: RunningBroker) -> Iterator[dict[str, Agent]]:
    made = {
        "alice": register(broker, ["read:data:1"]),
        "bob": register(broker, ["read:data:2", "write:data:2"]),
        "carol": register(broker, ["read:data:3"]),
    }
    yield made
    for agent in made.values():
        agent.close()


def test_two_agents_authenticate_each_other_with_the_broker_stopped(
    own_broker: RunningBroker,
) -> None:
    verifier = verifier_for(own_broker)
    alice = register(own_broker, ["read:data:1"])
    bob = register(own_broker, ["read:data:2"])
    try:
        alice_side = alice.offline_peer(verifier.verify_peer)
        bob_side = bob.offline_peer(verifier.verify_peer)
        stop_broker(own_broker)  # no broker from here on: no round trip is possible
        bob_seen, alice_seen = handshake(alice_side, bob_side, bob.agent_id)
        assert (bob_seen.agent_id, bob_seen.scope) == (bob.agent_id, ("read:data:2",))
        assert (alice_seen.agent_id, alice_seen.scope) == (alice.agent_id, ("read:data:1",))
        assert bob_seen.channel == alice_seen.channel == CHANNEL
        assert bob_seen.expires_at == jws.decode_unverified(bob.token)[1]["exp"]
        assert verifier.feed_staleness() < 60  # within the outage bound
    finally:
        alice.close()
        bob.close()
        verifier.close()


def test_a_critical_peer_is_refused_as_soon_as_the_feed_is_lost(own_broker: RunningBroker) -> None:
    verifier = verifier_for(own_broker, critical_scopes=("write:payments:*",))
    payer = register(own_broker, ["write:payments:42"])
    reader = register(own_broker, ["read:data:1"])
    try:
        payer_token, reader_token = payer.token, reader.token
        assert verifier.verify_peer(payer_token).sub == payer.agent_id  # feed live: fine
        stop_broker(own_broker)
        poll(lambda: not verifier.feed_live(), timeout=5.0)
        with pytest.raises(RevocationStateStale) as caught:
            verifier.verify_peer(payer_token)
        assert caught.value.critical
        assert verifier.verify_peer(reader_token).sub == reader.agent_id  # 60 s for it
    finally:
        payer.close()
        reader.close()
        verifier.close()


def test_replays_are_refused(verifier: Verifier, agents: dict[str, Agent]) -> None:
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    bob = agents["bob"].offline_peer(verifier.verify_peer)
    hello = alice.hello(agents["bob"].agent_id, channel=CHANNEL)
    answer = bob.answer(hello, channel=CHANNEL)
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.answer(hello, channel=CHANNEL)  # the same hello again
    assert caught.value.reason == "a hello seen before (replay)"
    finish, _ = alice.finish(answer)
    with pytest.raises(PeerAuthenticationFailed) as caught:
        alice.finish(answer)  # the same answer again
    assert "spent challenge" in caught.value.reason or "no open challenge" in caught.value.reason
    bob.accept(finish)
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.accept(finish)  # the same finish again
    assert "no open challenge" in caught.value.reason
    # A hello or answer made for another run is of no use in this one.
    other_bob = agents["bob"].offline_peer(verifier.verify_peer)
    with pytest.raises(PeerAuthenticationFailed):
        alice.finish(
            other_bob.answer(
                alice.hello(agents["carol"].agent_id, channel=CHANNEL), channel=CHANNEL
            )
        )


def test_the_answer_must_come_from_the_agent_asked_and_hold_its_key(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    carol = agents["carol"].offline_peer(verifier.verify_peer)
    bob_id = agents["bob"].agent_id
    # Carol is not Bob: she refuses a hello for him, and her own answer is refused.
    hello = alice.hello(bob_id, channel=CHANNEL)
    with pytest.raises(PeerAuthenticationFailed, match="peer authentication failed"):
        carol.answer(hello, channel=CHANNEL)
    parsed = rules.parse_hello(hello)
    forged_for_carol = rules.hello_message(
        rules.Hello(parsed.initiator, carol.agent_id, parsed.nonce, parsed.iat)
    )
    with pytest.raises(PeerAuthenticationFailed) as caught:
        alice.finish(carol.answer(forged_for_carol, channel=CHANNEL))
    assert caught.value.reason == "the answer comes from another agent than asked"
    # Carol holds Bob's token (a stolen bearer token) but not Bob's key.
    bob_token = agents["bob"].token
    carol_holding_bob = OfflinePeerAuth(
        bob_id, lambda: bob_token, agents["carol"]._signing_key(), verifier.verify_peer
    )
    with pytest.raises(PeerAuthenticationFailed) as caught:
        alice.finish(
            carol_holding_bob.answer(alice.hello(bob_id, channel=CHANNEL), channel=CHANNEL)
        )
    assert caught.value.reason == "the transcript signature does not verify with the peer's key"


def test_the_channel_and_the_tokens_are_bound(verifier: Verifier, agents: dict[str, Agent]) -> None:
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    bob = agents["bob"].offline_peer(verifier.verify_peer)
    bob_id = agents["bob"].agent_id
    # A relay that makes Bob answer on another connection than the one Alice talks over.
    hello = alice.hello(bob_id, channel=CHANNEL)
    relayed = bob.answer(hello, channel="https://relay.example/peer")
    with pytest.raises(PeerAuthenticationFailed, match="peer authentication failed"):
        alice.finish(relayed)
    # A finish whose token was swapped for another of Alice's tokens' (same key, same agent)
    # no longer matches the transcript Alice signed.
    hello = alice.hello(bob_id, channel=CHANNEL)
    finish, _ = alice.finish(bob.answer(hello, channel=CHANNEL))
    body = json.loads(finish)
    body["token"] = agents["carol"].token
    with pytest.raises(PeerAuthenticationFailed):
        bob.accept(json.dumps(body))


def test_reflection_and_self_authentication_are_refused(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    with pytest.raises(PeerAuthenticationFailed):
        alice.hello(agents["alice"].agent_id, channel=CHANNEL)
    parsed = rules.parse_hello(alice.hello(agents["bob"].agent_id, channel=CHANNEL))
    mirrored = rules.hello_message(
        rules.Hello(alice.agent_id, alice.agent_id, parsed.nonce, parsed.iat)
    )
    with pytest.raises(PeerAuthenticationFailed) as caught:
        alice.answer(mirrored, channel=CHANNEL)
    assert caught.value.reason.startswith("reflection")


def test_late_or_misdated_messages_are_refused(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    alice_clock, bob_clock = Clock(), Clock()
    alice = agents["alice"].offline_peer(verifier.verify_peer, clock=alice_clock)
    bob = agents["bob"].offline_peer(verifier.verify_peer, clock=bob_clock)
    bob_id = agents["bob"].agent_id
    answer = bob.answer(alice.hello(bob_id, channel=CHANNEL), channel=CHANNEL)
    alice_clock.ahead = 31  # the answer comes after Alice's 30 s window
    with pytest.raises(PeerAuthenticationFailed) as caught:
        alice.finish(answer)
    assert caught.value.reason == "the answer came after the window"
    alice_clock.ahead = 0
    bob_clock.ahead = 31  # a hello dated 31 s before Bob's clock
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.answer(alice.hello(bob_id, channel=CHANNEL), channel=CHANNEL)
    assert caught.value.reason == "the hello is too old or dated in the future"
    bob_clock.ahead = 0
    hello = alice.hello(bob_id, channel=CHANNEL)
    finish, _ = alice.finish(bob.answer(hello, channel=CHANNEL))
    bob_clock.ahead = 31
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.accept(finish)
    assert caught.value.reason == "the finish came after the window"


def test_a_forged_or_revoked_peer_token_is_refused(
    broker: RunningBroker, verifier: Verifier
) -> None:
    alice_agent = register(broker, ["read:data:1"], task="revoke-me")
    bob_agent = register(broker, ["read:data:2"])
    try:
        alice = alice_agent.offline_peer(verifier.verify_peer)
        bob = bob_agent.offline_peer(verifier.verify_peer)
        header, payload, signature = bob_agent.token.split(".")
        claims = jws.decode_unverified(bob_agent.token)[1]
        widened = jws.b64url_encode(json.dumps({**claims, "scope": "write:data:*"}).encode())
        with pytest.raises(InvalidToken):
            verifier.verify_peer(f"{header}.{widened}.{signature}")
        handshake(alice, bob, bob_agent.agent_id)  # fine before the revocation
        assert broker.revoke("task", "revoke-me").status_code == 200
        hello = alice.hello(bob_agent.agent_id, channel=CHANNEL)
        answer = bob.answer(hello, channel=CHANNEL)
        finish, _ = alice.finish(answer)  # Bob is still fine
        elapsed = poll(lambda: _refused(bob, alice, bob_agent.agent_id), timeout=5.0)
        assert elapsed < 5.0
        with pytest.raises(InvalidToken) as caught:
            bob.accept(finish)
        assert caught.value.reason.startswith("token has been revoked")
    finally:
        alice_agent.close()
        bob_agent.close()


def _refused(bob: OfflinePeerAuth, alice: OfflinePeerAuth, bob_id: str) -> bool:
    try:
        handshake(alice, bob, bob_id)
    except InvalidToken:
        return True
    return False


def test_an_offline_delegate_authenticates_with_its_chain(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    """A delegate that holds only an offline chain proves the chain's last key; a chain
    signed over to another key cannot be presented by the one who stole it."""
    from nacl.signing import SigningKey

    from tasklease.client import OfflineCredential

    alice = agents["alice"]
    helper_key = SigningKey.generate()
    helper_id = alice.agent_id + "/helper"
    chain = alice.attenuate(helper_id, bytes(helper_key.verify_key), scope=["read:data:1"], ttl=60)
    held = OfflineCredential(chain, helper_key)
    helper = OfflinePeerAuth(helper_id, lambda: held.chain, helper_key, verifier.verify_peer)
    bob = agents["bob"].offline_peer(verifier.verify_peer)
    bob_id = agents["bob"].agent_id
    hello = helper.hello(bob_id, channel=CHANNEL)
    finish, seen = helper.finish(bob.answer(hello, channel=CHANNEL))
    assert seen.agent_id == bob_id
    helper_seen = bob.accept(finish)
    assert helper_seen.agent_id == helper_id and helper_seen.scope == ("read:data:1",)
    # Alice's own key no longer speaks for the chain: its last delegate's does.
    impostor = OfflinePeerAuth(
        helper_id, lambda: held.chain, alice._signing_key(), verifier.verify_peer
    )
    hello = impostor.hello(bob_id, channel=CHANNEL)
    finish, _ = impostor.finish(bob.answer(hello, channel=CHANNEL))
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.accept(finish)
    assert caught.value.reason == "the transcript signature does not verify with the peer's key"


def test_a_peer_check_never_answers_for_a_resource(
    broker: RunningBroker, verifier: Verifier
) -> None:
    """verify_peer ignores the audience, so what it verified is never cached for verify():
    a token for another resource stays refused there, before and after."""
    agent = Agent.register(
        broker.url, broker.launch_token(["read:data:1"], audience=["svc-b"]), "o", "t",
        ["read:data:1"],
    )  # fmt: skip
    try:
        assert jws.decode_unverified(agent.token)[1]["aud"] == ["svc-b"]
        assert verifier.verify_peer(agent.token).sub == agent.agent_id
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(agent.token)
        assert caught.value.reason == "audience mismatch"
        assert verifier.verify_peer(agent.token).sub == agent.agent_id
        with pytest.raises(InvalidToken) as caught:
            verifier.verify_peer("tlr_" + "a" * 43)  # by reference: needs the broker
        assert caught.value.reason == "a by-reference token cannot be verified offline"
    finally:
        agent.close()
