"""A responder shows its token to whoever sends a hello (unsigned, anyone can): it shows
only a sender-constrained one, so nobody collects a bearer token by asking (TM-52).

The first tests judge token strings with no broker (the responder never checks its own
token); the others run ``Agent.offline_peer`` against a real broker process."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
from nacl.signing import SigningKey
from test_peer_offline import CHANNEL, forged_hello, handshake, register, verifier_for

from tasklease.client import (
    Agent,
    OfflineCredential,
    OfflinePeerAuth,
    PeerAuthenticationFailed,
    TaskleaseError,
)
from tasklease.rules import attenuation, jws
from tasklease.verify import InvalidToken, Verifier

pytestmark = pytest.mark.slow

BOB = "spiffe://tasklease.local/agent/orch/task/bob"
ALICE = "spiffe://tasklease.local/agent/orch/task/alice"


def jwt(**claims: Any) -> str:
    """A token shaped like the broker's (signature random: the responder never checks its
    own token)."""
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"}
    body = {"sub": BOB, "exp": int(time.time()) + 300, "jti": secrets.token_hex(16), **claims}
    return ".".join(
        (
            jws.b64url_encode(json.dumps(header).encode()),
            jws.b64url_encode(json.dumps(body).encode()),
            jws.b64url_encode(secrets.token_bytes(64)),
        )
    )


def chain(root: str) -> str:
    """An offline chain of one well-formed block over ``root`` (signed by a key of no
    one's: the responder never checks what the block grants)."""
    now = int(time.time())
    payload = attenuation.block_payload(
        sub=BOB, key=secrets.token_bytes(32), exp=now + 60, iat=now, jti="j1", depth=1
    )
    return attenuation.append_block(root, payload, SigningKey.generate())


def never_called(token: str) -> NoReturn:
    raise AssertionError("a responder does not check its own token")


def responder(token: str | Callable[[], str], **options: Any) -> OfflinePeerAuth:
    current = token if callable(token) else lambda: token
    return OfflinePeerAuth(BOB, current, SigningKey.generate(), never_called, **options)


def shown(bob: OfflinePeerAuth) -> str:
    """The token Bob's answer to a fresh hello shows."""
    answer = json.loads(bob.answer(forged_hello(ALICE, BOB), channel=CHANNEL))
    token: str = answer["token"]
    return token


def refused(bob: OfflinePeerAuth) -> str:
    """Bob's reason for refusing a fresh hello."""
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.answer(forged_hello(ALICE, BOB), channel=CHANNEL)
    return caught.value.reason


DPOP_BOUND = {"cnf": {"jkt": jws.jwk_thumbprint(secrets.token_bytes(32))}}
CERT_BOUND = {"cnf": {"x5t#S256": jws.b64url_encode(secrets.token_bytes(32))}}


def test_a_bearer_jwt_is_refused_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    """Before: every hello got an answer carrying the bearer token. Now every one is refused,
    saying why and what to do, and the operator is warned once; the token appears nowhere."""
    token = jwt()
    bob = responder(token)
    caplog.set_level(logging.WARNING, logger="tasklease.client")
    for _ in range(3):
        with pytest.raises(PeerAuthenticationFailed) as caught:
            bob.answer(forged_hello(ALICE, BOB), channel=CHANNEL)
        reason = caught.value.reason
        assert "bearer token" in reason and "dpop=True" in reason
        assert "show_bearer_token=True" in reason
        assert token not in reason and token not in str(caught.value)
    warnings = [r for r in caplog.records if r.name == "tasklease.client"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert BOB in warnings[0].getMessage() and "bearer token" in warnings[0].getMessage()
    assert token not in caplog.text
    # A hello it would refuse anyway still says why: the token is not the first thing read.
    with pytest.raises(PeerAuthenticationFailed) as caught:
        bob.answer(forged_hello(ALICE, ALICE), channel=CHANNEL)
    assert caught.value.reason == "the hello is for another agent"


def test_show_bearer_token_answers_with_it() -> None:
    token = jwt()
    assert refused(responder(token)).startswith("this agent's token is a bearer token")
    assert shown(responder(token, show_bearer_token=True)) == token


def test_a_bound_jwt_or_a_chain_from_one_is_shown() -> None:
    for bound in (jwt(**DPOP_BOUND), jwt(**CERT_BOUND)):
        assert shown(responder(bound)) == bound
        held = chain(bound)
        assert shown(responder(held)) == held
    # A chain carries its root: one over a bearer token would hand that token out.
    assert "bearer token" in refused(responder(chain(jwt())))
    assert "bearer token" in refused(responder("tla1~not-a-jws~x.y"))
    # A cnf that names no key binds nothing.
    for cnf in ({}, {"jkt": ""}, {"jkt": 7}, {"other": "x"}, "jkt"):
        assert "bearer token" in refused(responder(jwt(cnf=cnf)))


def test_an_opaque_token_is_shown_only_when_its_holder_says_it_is_bound() -> None:
    opaque = "tlr_" + jws.b64url_encode(secrets.token_bytes(32))
    assert "bearer token" in refused(responder(opaque))
    assert "bearer token" in refused(responder(opaque, opaque_token_bound=lambda: False))
    assert shown(responder(opaque, opaque_token_bound=lambda: True)) == opaque
    # A JWT speaks for itself: the holder's word does not make a bearer JWT bound.
    assert "bearer token" in refused(responder(jwt(), opaque_token_bound=lambda: True))


def test_the_token_is_judged_at_each_answer() -> None:
    """The token changes on renewal: a bound one renewed as bearer is refused from then on."""
    tokens = [jwt(**DPOP_BOUND)]
    bob = responder(lambda: tokens[-1])
    assert shown(bob) == tokens[0]
    tokens.append(jwt())
    assert "bearer token" in refused(bob)
    tokens.append(jwt(**DPOP_BOUND))
    assert shown(bob) == tokens[-1]


# --- through Agent.offline_peer, with a real broker ------------------------------------------


@pytest.fixture(scope="module")
def verifier(broker: Any) -> Iterator[Verifier]:
    running = verifier_for(broker)
    yield running
    running.close()


def test_dpop_agents_authenticate_and_a_bearer_agent_does_not_answer(
    broker: Any, verifier: Verifier
) -> None:
    alice = register(broker, ["read:data:1"], dpop=True)
    bob = register(broker, ["read:data:2"], dpop=True)
    carol = register(broker, ["read:data:3"], dpop=False)
    try:
        assert "jkt" in jws.decode_unverified(bob.token)[1]["cnf"]
        assert "cnf" not in jws.decode_unverified(carol.token)[1]
        alice_side = alice.offline_peer(verifier.verify_peer)
        bob_side = bob.offline_peer(verifier.verify_peer)
        carol_side = carol.offline_peer(verifier.verify_peer)
        bob_seen, alice_seen = handshake(alice_side, bob_side, bob.agent_id)
        assert (bob_seen.agent_id, alice_seen.agent_id) == (bob.agent_id, alice.agent_id)
        # Carol, a bearer, does not answer; she still initiates (she shows her token only
        # to a responder she has authenticated).
        with pytest.raises(PeerAuthenticationFailed) as caught:
            carol_side.answer(alice_side.hello(carol.agent_id, channel=CHANNEL), channel=CHANNEL)
        assert "bearer token" in caught.value.reason
        assert handshake(carol_side, bob_side, bob.agent_id)[1].agent_id == carol.agent_id
        # Told that her peers are trusted, she answers as before.
        trusting = carol.offline_peer(verifier.verify_peer, show_bearer_token=True)
        assert handshake(alice_side, trusting, carol.agent_id)[0].agent_id == carol.agent_id
    finally:
        for agent in (alice, bob, carol):
            agent.close()


def test_a_helper_shows_its_chain_when_the_root_is_bound(broker: Any, verifier: Verifier) -> None:
    """A chain starts only from a bound root; a bearer root makes none (decision 263)."""
    bob = register(broker, ["read:data:2"], dpop=True)
    bound_lead = register(broker, ["read:data:1"], dpop=True)
    bearer_lead = register(broker, ["read:data:1"], dpop=False)
    try:
        bob_side = bob.offline_peer(verifier.verify_peer)
        key = SigningKey.generate()
        helper_id = bound_lead.agent_id + "/helper"
        held = OfflineCredential(
            bound_lead.attenuate(helper_id, bytes(key.verify_key), scope=["read:data:1"]), key
        )
        helper = OfflinePeerAuth(helper_id, lambda h=held: h.chain, key, verifier.verify_peer)
        seen_by_bob, seen_by_helper = handshake(bob_side, helper, helper_id)
        assert seen_by_bob.agent_id == helper_id
        assert seen_by_helper.agent_id == bob.agent_id
        with pytest.raises(TaskleaseError) as refused:
            bearer_lead.attenuate(
                bearer_lead.agent_id + "/helper", bytes(key.verify_key), scope=["read:data:1"]
            )
        assert refused.value.code == "invalid_chain" and "bearer token" in str(refused.value)
    finally:
        for agent in (bob, bound_lead, bearer_lead):
            agent.close()


def _many_scopes() -> list[str]:
    # As tests/verify/test_reference.py: past the broker's 4 KB threshold, by reference.
    return ["read:data:42", *(f"read:dataset-{i:04d}-with-a-rather-long-name:*" for i in range(60))]


def test_an_opaque_token_is_shown_by_an_agent_registered_with_dpop(
    broker: Any, verifier: Verifier
) -> None:
    """The string says nothing; the agent knows it sent a DPoP proof when it got it."""
    scope = _many_scopes()
    bound = Agent.register(broker.url, broker.launch_token(scope), "o", "t", scope, dpop=True)
    bearer = Agent.register(broker.url, broker.launch_token(scope), "o", "t", scope)
    alice = register(broker, ["read:data:1"], dpop=True)
    try:
        assert bound.token.startswith("tlr_") and bearer.token.startswith("tlr_")
        alice_side = alice.offline_peer(verifier.verify_peer)
        answer = bound.offline_peer(verifier.verify_peer).answer(
            alice_side.hello(bound.agent_id, channel=CHANNEL), channel=CHANNEL
        )
        assert json.loads(answer)["token"] == bound.token
        with pytest.raises(InvalidToken) as caught:  # shown, but no verifier reads it offline
            alice_side.finish(answer)
        assert caught.value.reason == "a by-reference token cannot be verified offline"
        with pytest.raises(PeerAuthenticationFailed) as refused_here:
            bearer.offline_peer(verifier.verify_peer).answer(
                alice_side.hello(bearer.agent_id, channel=CHANNEL), channel=CHANNEL
            )
        assert "bearer token" in refused_here.value.reason
    finally:
        for agent in (bound, bearer, alice):
            agent.close()
