"""A block's ``sub`` is nested under its signer's name, so no holder can name another agent.

Nobody offline can check that a name belongs to a key: a holder writes its delegate's name
next to a key of its choosing. So a delegate's name is its delegator's followed by one or
more segments of its own (docs/formats.md): it never equals a registered agent's id, and it
shows who vouched for it. Alice cannot present a chain as Carol's to Bob's peer check, to a
resource server's verifier or anywhere else (tests/core/test_offline_broker.py: the broker).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from offline_support import (
    BROKER,
    BROKER_KID,
    HTU,
    NOW,
    agent_id,
    hops,
    key,
    proof,
    public,
    raw_block,
    root_token,
)

from tasklease.client import OfflineCredential, OfflinePeerAuth
from tasklease.rules import jws
from tasklease.rules.attenuation import ChainError, is_nested_name
from tasklease.rules.chainverify import derive
from tasklease.verify import InvalidToken, Verifier

JWKS = {
    "keys": [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": BROKER_KID,
            "x": jws.b64url_encode(bytes(BROKER.verify_key)),
        }
    ]
}
CHANNEL = "https://bob.internal:8443/peer"


class _Clock:
    def now(self) -> float:
        return NOW + 1


def _verifier() -> Verifier:
    verifier = Verifier(
        "https://broker.invalid",
        audience="https://orders.example",
        feed=False,
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=JWKS)),
    )
    verifier.start()
    return verifier


def _peer(name: str, token: str, signer: str, verifier: Verifier) -> OfflinePeerAuth:
    return OfflinePeerAuth(
        name, lambda: token, key(signer), verifier.verify_peer, clock=lambda: NOW + 1
    )


def _bob(verifier: Verifier) -> OfflinePeerAuth:
    """Bob, a registered agent answering with a token bound to his DPoP key."""
    jkt = jws.jwk_thumbprint(public("bob-dpop"))
    token = root_token(holder="bob", jti="b" * 32, extra={"cnf": {"jkt": jkt}})
    return _peer(agent_id("bob"), token, "bob", verifier)


def _handshake(initiator: OfflinePeerAuth, bob: OfflinePeerAuth) -> Any:
    hello = initiator.hello(agent_id("bob"), channel=CHANNEL)
    finish, _ = initiator.finish(bob.answer(hello, channel=CHANNEL))
    return bob.accept(finish)


def _as_carol() -> str:
    """Alice's chain naming Carol's registered id with a key Alice made: a dishonest
    holder's own tool signs whatever it likes."""
    return raw_block(
        root_token(holder="alice"),
        "alice",
        sub=agent_id("carol"),
        key=public("made-by-alice"),
        exp=NOW + 60,
        iat=NOW,
        jti="c" * 32,
        depth=1,
    )


def test_alice_cannot_present_a_chain_as_carols() -> None:
    chain = _as_carol()
    verifier = _verifier()
    # Bob's offline peer check: the chain's last key signs, but the name is not Alice's to give.
    impostor = _peer(agent_id("carol"), chain, "made-by-alice", verifier)
    with pytest.raises(InvalidToken) as refused:
        _handshake(impostor, _bob(verifier))
    assert "nested" in refused.value.reason
    # A resource server's verifier.
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(
            chain,
            scheme="DPoP",
            dpop_proof=proof("made-by-alice", chain, iat=NOW + 1),
            htm="GET",
            htu=HTU,
        )
    assert "nested" in refused.value.reason
    # Nor can the SDK's derivation be asked to write it.
    with pytest.raises(ChainError) as caught:
        derive(
            root_token(holder="alice"),
            key("alice"),
            delegate=agent_id("carol"),
            delegate_key=public("made-by-alice"),
            now=NOW,
            ttl=60,
        )
    assert "nested" in caught.value.reason


def test_a_nested_name_authenticates_and_is_reported_as_such() -> None:
    helper = agent_id("alice") + "/helper"
    chain = derive(
        root_token(holder="alice"),
        key("alice"),
        delegate=helper,
        delegate_key=public("helper"),
        now=NOW,
        ttl=60,
    )
    verifier = _verifier()
    seen = _handshake(_peer(helper, chain, "helper", verifier), _bob(verifier))
    assert seen.agent_id == helper and seen.agent_id.startswith(agent_id("alice") + "/")
    token = verifier.verify(
        chain, scheme="DPoP", dpop_proof=proof("helper", chain, iat=NOW + 1), htm="GET", htu=HTU
    )
    assert token.sub == helper
    assert [r.agent for r in token.delegation_chain] == [agent_id("alice")]


@pytest.mark.parametrize(
    "sub",
    [
        agent_id("carol"),  # a sibling: a registered agent's id
        agent_id("alice"),  # the holder itself
        agent_id("alice") + "helper",  # a prefix, not a parent
        agent_id("alice") + "/",  # an empty segment
        agent_id("alice") + "//helper",
        agent_id("alice") + "/helper/",
        agent_id("alice") + "/..",  # would read as the holder's parent once normalised
        agent_id("alice") + "/./helper",
        agent_id("alice") + "/" + "h" * 129,  # a segment too long
        agent_id("alice") + "/hel+per",  # a character SPIFFE paths do not have
    ],
)
def test_what_is_not_nested_under_the_holder_is_refused(sub: str) -> None:
    assert not is_nested_name(agent_id("alice"), sub)
    chain = raw_block(
        root_token(holder="alice"),
        "alice",
        sub=sub,
        key=public("d"),
        exp=NOW + 60,
        iat=NOW,
        jti="d" * 32,
        depth=1,
    )
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(
            chain, scheme="DPoP", dpop_proof=proof("d", chain, iat=NOW + 1), htm="GET", htu=HTU
        )
    assert "nested" in refused.value.reason


def test_each_block_is_nested_under_the_one_before() -> None:
    chain = hops(("a", "b", "c"))
    nested = agent_id("a") + "/b/c"
    assert (
        _verifier()
        .verify(chain, scheme="DPoP", dpop_proof=proof("c", chain, iat=NOW + 1), htm="GET", htu=HTU)
        .sub
        == nested
    )
    # A second block nested under the root holder (not under the first delegate): refused.
    first = hops(("a", "b"))
    sideways = raw_block(
        first,
        "b",
        sub=agent_id("a") + "/c",
        key=public("c"),
        exp=NOW + 60,
        iat=NOW,
        jti="e" * 32,
        depth=2,
    )
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(
            sideways, scheme="DPoP", dpop_proof=proof("c", sideways, iat=NOW + 1), htm="GET",
            htu=HTU,
        )  # fmt: skip
    assert "nested" in refused.value.reason


def test_the_sdk_builds_a_nested_name_from_a_label_and_refuses_any_other() -> None:
    held = OfflineCredential(hops(("a", "b")), key("b"), clock=lambda: NOW + 1)
    assert held.holder == agent_id("a") + "/b"
    by_label = OfflineCredential(held.attenuate("c", public("c")), key("c"), clock=lambda: NOW)
    assert by_label.holder == agent_id("a") + "/b/c"
    full = OfflineCredential(
        held.attenuate(agent_id("a") + "/b/c/d", public("d")), key("d"), clock=lambda: NOW
    )
    assert full.holder == agent_id("a") + "/b/c/d"
    for bad in (agent_id("carol"), agent_id("a") + "/c", "", "a b", "..", "c/", "/c"):
        with pytest.raises(ValueError) as caught:
            held.attenuate(bad, public("x"))
        assert "nested" in str(caught.value) or "label" in str(caught.value)


def test_a_nested_name_is_held_to_the_formats_512_characters() -> None:
    holder = agent_id("root")
    fits = holder
    while len(fits) < 512:  # segments of at most 100 characters, to exactly 512 in all
        fits += "/" + "a" * min(100, 512 - len(fits) - 1)
    assert len(fits) == 512 and is_nested_name(holder, fits)
    assert not is_nested_name(holder, fits + "a")
