"""Offline peer mutual authentication end to end: agents registered with a real broker
process authenticate each other from their tokens and signed challenges, checked by a
tasklease.verify.Verifier (cached JWKS, the revocation feed), with no broker round trip,
even with the broker stopped; and every way to cheat it is refused."""

from __future__ import annotations

import gc
import json
import secrets
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import RunningBroker, stop_broker
from verify_support import app_credentials, poll

from tasklease.client import Agent, AuthenticatedPeer, OfflinePeerAuth, PeerAuthenticationFailed
from tasklease.rules import jws
from tasklease.rules import peerauth as rules
from tasklease.rules.binding import MemoryProofLedger
from tasklease.verify import InvalidToken, RevocationStateStale, Verifier

pytestmark = pytest.mark.slow

CHANNEL = "https://bob.internal:8443/peer"


def register(
    broker: RunningBroker, scope: list[str], task: str = "peer-task", *, dpop: bool = True
) -> Agent:
    """A new agent, bound to a DPoP key unless told: a responder shows only a bound token."""
    launch = broker.launch_token(scope)
    return Agent.register(broker.url, launch, "orch-peer", task, scope, dpop=dpop)


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


def test_two_agents_authenticate_each_other_and_a_critical_peer_is_refused_with_the_broker_stopped(
    own_broker: RunningBroker,
) -> None:
    """One broker, stopped once, for two checks that each needed a broker to stop: two
    agents authenticate each other with no broker (no round trip is possible), and a
    peer holding a critical scope is refused as soon as the feed is lost, while an
    ordinary peer is still accepted (its bound is 60 s)."""
    verifier = verifier_for(own_broker)
    critical = verifier_for(own_broker, critical_scopes=("write:payments:*",))
    alice = register(own_broker, ["read:data:1"])
    bob = register(own_broker, ["read:data:2"])
    payer = register(own_broker, ["write:payments:42"])
    reader = register(own_broker, ["read:data:1"])
    try:
        alice_side = alice.offline_peer(verifier.verify_peer)
        bob_side = bob.offline_peer(verifier.verify_peer)
        payer_token, reader_token = payer.token, reader.token
        assert critical.verify_peer(payer_token).sub == payer.agent_id  # feed live: fine
        stop_broker(own_broker)  # no broker from here on: no round trip is possible

        # Two agents authenticate each other.
        bob_seen, alice_seen = handshake(alice_side, bob_side, bob.agent_id)
        assert (bob_seen.agent_id, bob_seen.scope) == (bob.agent_id, ("read:data:2",))
        assert (alice_seen.agent_id, alice_seen.scope) == (alice.agent_id, ("read:data:1",))
        assert bob_seen.channel == alice_seen.channel == CHANNEL
        assert bob_seen.expires_at == jws.decode_unverified(bob.token)[1]["exp"]
        assert verifier.feed_staleness() < 60  # within the outage bound

        # A critical peer is refused as soon as the feed is lost.
        poll(lambda: not critical.feed_live(), timeout=5.0)
        with pytest.raises(RevocationStateStale) as caught:
            critical.verify_peer(payer_token)
        assert caught.value.critical
        assert critical.verify_peer(reader_token).sub == reader.agent_id  # 60 s for it
    finally:
        for agent in (alice, bob, payer, reader):
            agent.close()
        verifier.close()
        critical.close()


def test_replays_are_refused(verifier: Verifier, agents: dict[str, Agent]) -> None:
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    bob = agents["bob"].offline_peer(verifier.verify_peer)
    hello = alice.hello(agents["bob"].agent_id, channel=CHANNEL)
    answer = bob.answer(hello, channel=CHANNEL)
    # The same hello again: Bob keeps nothing for a hello (decision 149), so it gets a new
    # challenge, which only Alice could finish, and she answers one challenge per hello.
    again = bob.answer(hello, channel=CHANNEL)
    assert json.loads(again)["nonce"] != json.loads(answer)["nonce"]
    finish, _ = alice.finish(answer)
    for replayed in (answer, again):  # the same answer again, or the replayed hello's
        with pytest.raises(PeerAuthenticationFailed) as caught:
            alice.finish(replayed)
        assert (
            "spent challenge" in caught.value.reason or "no open challenge" in caught.value.reason
        )
    bob.accept(finish)
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.accept(finish)  # the same finish again
    assert caught.value.reason == "the finish answers a spent challenge (replay)"
    # Nor anywhere else: another responder for Bob (its own challenge key) cannot open it.
    with pytest.raises(PeerAuthenticationFailed) as caught:
        agents["bob"].offline_peer(verifier.verify_peer).accept(finish)
    assert caught.value.reason == "the cookie is not one this responder sealed"
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
    # Carol holds Bob's token (stolen) but not Bob's key: the answer's signature fails.
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


# --- decision 149: the responder keeps no state for a hello ----------------------------------


def forged_hello(initiator: str, responder: str) -> str:
    """A hello anyone can send: unsigned, any initiator, a fresh nonce, dated now."""
    nonce = jws.b64url_encode(secrets.token_bytes(32))
    return rules.hello_message(rules.Hello(initiator, responder, nonce, int(time.time())))


def forged_finish(answer: str, token: str) -> str:
    """A finish for ``answer`` by someone who holds ``token`` (stolen) but not its key: the
    answer's nonce and cookie (if any) echoed, any signature."""
    body = json.loads(answer)
    finish = {
        "typ": "tasklease-peer-finish",
        "responder_nonce": body["nonce"],
        "token": token,
        "sig": jws.b64url_encode(secrets.token_bytes(64)),
    }
    if "cookie" in body:
        finish.update(v=body["v"], cookie=body["cookie"])
    return json.dumps(finish)


def test_a_flood_of_hellos_does_not_lock_a_peer_out(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    """Hellos are unsigned: whoever reaches Bob's peer endpoint sends them with fresh nonces
    faster than they expire. Bob answers each and keeps nothing, so Alice still gets in
    (before decision 149 the flood filled his hello ledger and challenge table, 64 here,
    and every hello after it was refused)."""
    bob_id, alice_id = agents["bob"].agent_id, agents["alice"].agent_id
    bob = agents["bob"].offline_peer(verifier.verify_peer, capacity=64)
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    refused = 0
    stolen = agents["alice"].token  # the flooder even holds Alice's token, not her key
    for i in range(10 * 64):
        initiator = alice_id if i % 2 else f"spiffe://tasklease.local/agent/x/flood/{i}"
        try:
            answer = bob.answer(forged_hello(initiator, bob_id), channel=CHANNEL)
        except PeerAuthenticationFailed:
            refused += 1  # the flooder does not care; Bob's memory is what counts
            continue
        if initiator == alice_id:  # and finishes, as far as it can
            with pytest.raises(PeerAuthenticationFailed) as caught:
                bob.accept(forged_finish(answer, stolen))
            assert (
                caught.value.reason
                == "the transcript signature does not verify with the peer's key"
            )
    bob_seen, alice_seen = handshake(alice, bob, bob_id)
    assert (bob_seen.agent_id, alice_seen.agent_id) == (bob_id, alice_id)
    assert refused == 0


def test_memory_stays_bounded_under_the_flood(verifier: Verifier, agents: dict[str, Agent]) -> None:
    """What a responder holds after a flood of hellos and forged finishes is what it held
    before: nothing in its replay ledger, nothing allocated by the flood still alive."""
    bob_id, alice_id = agents["bob"].agent_id, agents["alice"].agent_id
    ledger = MemoryProofLedger(10_000, holder_quota=500)
    bob = agents["bob"].offline_peer(verifier.verify_peer, replay=ledger)
    stolen = agents["alice"].token
    handshake(agents["alice"].offline_peer(verifier.verify_peer), bob, bob_id)  # warm up
    assert len(ledger) == 1
    gc.collect()
    tracemalloc.start(12)
    try:
        before = _held_by_peer_code(tracemalloc.take_snapshot())
        for i in range(600):
            initiator = alice_id if i % 4 == 0 else f"spiffe://tasklease.local/agent/x/f/{i}"
            answer = bob.answer(forged_hello(initiator, bob_id), channel=CHANNEL)
            if initiator == alice_id:
                with pytest.raises(PeerAuthenticationFailed):
                    bob.accept(forged_finish(answer, stolen))
        gc.collect()
        after = _held_by_peer_code(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    # Before decision 149 every hello held a ledger entry and a pending challenge: about
    # 700 bytes each, 400 kB here.
    assert after - before < 32_768, f"{after - before} bytes still held after the flood"
    assert len(ledger) == 1  # only the one authenticated finish


def _held_by_peer_code(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated by a call that went through the offline peer code."""
    mine = snapshot.filter_traces(
        [tracemalloc.Filter(True, "*/tasklease/client/_peer.py", all_frames=True)]
    )
    return sum(stat.size for stat in mine.statistics("filename"))


def test_one_agent_fills_only_its_quota_of_the_ledger(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    """Only authenticated finishes are remembered, and one holder key only up to its quota:
    a compromised agent that finishes handshakes as fast as it can, or through offline
    chains to keys of its own making, locks out no other agent."""
    from nacl.signing import SigningKey

    from tasklease.client import OfflineCredential

    bob_id = agents["bob"].agent_id
    bob = agents["bob"].offline_peer(verifier.verify_peer, capacity=64, holder_quota=4)
    carol = agents["carol"].offline_peer(verifier.verify_peer)
    for _ in range(4):
        handshake(carol, bob, bob_id)
    with pytest.raises(PeerAuthenticationFailed) as caught:
        handshake(carol, bob, bob_id)
    assert caught.value.reason == "too many finishes remembered (quota or capacity)"
    # A chain Carol derives to a fresh key counts as Carol (its root's holder key).
    helper_key = SigningKey.generate()
    helper_id = agents["carol"].agent_id + "/helper"
    chain = agents["carol"].attenuate(
        helper_id, bytes(helper_key.verify_key), scope=["read:data:3"], ttl=60
    )
    held = OfflineCredential(chain, helper_key)
    helper = OfflinePeerAuth(helper_id, lambda: held.chain, helper_key, verifier.verify_peer)
    with pytest.raises(PeerAuthenticationFailed) as caught:
        handshake(helper, bob, bob_id)
    assert caught.value.reason == "too many finishes remembered (quota or capacity)"
    # Alice is not Carol.
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    assert handshake(alice, bob, bob_id)[1].agent_id == agents["alice"].agent_id


def test_the_cookie_is_the_responders_alone(verifier: Verifier, agents: dict[str, Agent]) -> None:
    """The finish carries Bob's state back to him sealed: altered, swapped for another
    run's, or missing (a version 1 initiator), it is refused before any token is checked;
    a version 1 answer (no cookie: an older responder) is still finished by a new
    initiator, with a version 1 finish."""
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    bob = agents["bob"].offline_peer(verifier.verify_peer)
    bob_id = agents["bob"].agent_id
    first = json.loads(bob.answer(alice.hello(bob_id, channel=CHANNEL), channel=CHANNEL))
    second = json.loads(bob.answer(alice.hello(bob_id, channel=CHANNEL), channel=CHANNEL))
    assert first["v"] == second["v"] == rules.MESSAGE_VERSION
    finish = json.loads(alice.finish(json.dumps(first))[0])
    assert finish["v"] == rules.MESSAGE_VERSION and finish["cookie"] == first["cookie"]
    cookie = finish["cookie"]
    flipped = cookie[:10] + ("A" if cookie[10] != "A" else "B") + cookie[11:]
    cases = {
        "the cookie is not one this responder sealed": {"cookie": flipped},
        "the finish names another challenge than its cookie": {"cookie": second["cookie"]},
    }
    for reason, change in cases.items():
        with pytest.raises(PeerAuthenticationFailed) as caught:
            bob.accept(json.dumps({**finish, **change}))
        assert caught.value.reason == reason
    version_1 = {k: v for k, v in finish.items() if k not in ("v", "cookie")}
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.accept(json.dumps(version_1))
    assert caught.value.reason.startswith("the finish carries no cookie")
    assert bob.accept(json.dumps(finish)).agent_id == agents["alice"].agent_id  # untouched
    # A new initiator and an older responder: no cookie in, none out, same transcript.
    old_answer = {k: v for k, v in second.items() if k not in ("v", "cookie")}
    old_finish, seen = alice.finish(json.dumps(old_answer))
    assert seen.agent_id == bob_id
    assert "v" not in json.loads(old_finish) and "cookie" not in json.loads(old_finish)


def test_responders_for_one_agent_share_a_challenge_key_and_a_ledger(
    verifier: Verifier, agents: dict[str, Agent]
) -> None:
    """Two processes answering for Bob, with one challenge key and one ledger: a finish
    answered by one is accepted by the other, once."""
    key, ledger = secrets.token_bytes(rules.CHALLENGE_KEY_BYTES), MemoryProofLedger(64)
    first, second = (
        agents["bob"].offline_peer(verifier.verify_peer, challenge_key=key, replay=ledger)
        for _ in range(2)
    )
    alice = agents["alice"].offline_peer(verifier.verify_peer)
    hello = alice.hello(agents["bob"].agent_id, channel=CHANNEL)
    finish, _ = alice.finish(first.answer(hello, channel=CHANNEL))
    assert second.accept(finish).agent_id == agents["alice"].agent_id
    with pytest.raises(PeerAuthenticationFailed) as caught:
        first.accept(finish)
    assert caught.value.reason == "the finish answers a spent challenge (replay)"
    with pytest.raises(ValueError, match="replay ledger"):  # a key alone would not be
        agents["bob"].offline_peer(verifier.verify_peer, challenge_key=key)
    with pytest.raises(ValueError, match="challenge_key"):
        agents["bob"].offline_peer(verifier.verify_peer, challenge_key=b"short", replay=ledger)
