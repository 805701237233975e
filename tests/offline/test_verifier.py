"""tasklease.verify.Verifier with offline chains, its keys served in memory and no feed:
the answer is a VerifiedToken for the last holder; bearer chains only when opted in."""

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
    nested,
    proof,
    public,
    root_token,
)

from tasklease.rules import jws
from tasklease.rules.binding import PROOF_OVER_QUOTA
from tasklease.rules.chainverify import derive, offline_limits
from tasklease.verify import AppCredentials, InvalidToken, RevocationStateStale, Verifier

PAY = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": ["https://pay.example/payees/P"],
    "limits": {"max_amount": "500", "currency": "EUR"},
}
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


class _Clock:
    def now(self) -> float:
        return NOW + 1


def _verifier(**options: Any) -> Verifier:
    verifier = Verifier(
        "https://broker.invalid",
        audience="https://orders.example",
        feed=False,
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=JWKS)),
        **options,
    )
    verifier.start()
    return verifier


def test_a_chain_reads_as_its_last_holders_token() -> None:
    root = root_token(holder="a", details=[PAY])
    narrower = dict(PAY, limits={"max_amount": "80", "currency": "EUR"})
    chain = hops(("a", "b", "c"), root=root, scope=["read:orders:42"], grants=[narrower])
    verifier = _verifier()
    token = verifier.verify(
        chain, scheme="DPoP", dpop_proof=proof("c", chain, iat=NOW + 1), htm="GET", htu=HTU
    )
    assert token.sub == nested("a", "b", "c") and token.jti == f"{2:032x}"
    assert token.scope == ("read:orders:42",) and token.has_scope("read:orders:42")
    assert token.authorization_details[0]["limits"]["max_amount"] == "80"
    assert token.allows("resource_access", action="pay", location="https://pay.example/payees/P",
                        amount="80", currency="EUR", now=NOW + 1)  # fmt: skip
    assert not token.allows("resource_access", action="pay", amount="81", currency="EUR",
                            location="https://pay.example/payees/P", now=NOW + 1)  # fmt: skip
    assert [r.agent for r in token.delegation_chain] == [agent_id("a"), nested("a", "b")]
    assert token.actors == (nested("a", "b", "c"), nested("a", "b")) and token.depth == 2
    assert token.principal == "user:alice@example.org" and token.task_id == "task-42"
    assert token.offline is not None and token.offline.jtis[0] == "a" * 32
    assert token.cnf == {"jkt": token.offline.holder_jkt}
    assert "agent_jwk" not in token.claims and "act" not in token.claims


def test_a_block_that_drops_every_grant_leaves_its_holder_none_of_the_roots() -> None:
    # The root's grants are its holder's: a block narrowing them to none must not let the
    # leaf's token read them back from the root's claims.
    root = root_token(holder="a", details=[PAY])
    chain = hops(("a", "b"), root=root, grants=[])
    verifier = _verifier()
    token = verifier.verify(
        chain, scheme="DPoP", dpop_proof=proof("b", chain, iat=NOW + 1), htm="GET", htu=HTU
    )
    assert token.authorization_details == ()
    assert "authorization_details" not in token.claims
    assert not token.allows("resource_access", action="pay", location="https://pay.example/payees/P",
                            amount="1", currency="EUR", now=NOW + 1)  # fmt: skip


def test_a_bearer_chain_is_refused_unless_opted_in() -> None:
    chain = hops(("a", "b"))
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(chain)
    assert "bearer" in refused.value.reason
    assert _verifier(bearer_chains=True).verify(chain).sub == nested("a", "b")


def test_the_brokers_own_audiences_let_a_block_name_one_resource() -> None:
    root = root_token(holder="a", aud=("tasklease",))
    chain = derive(
        root,
        key("a"),
        delegate=nested("a", "b"),
        delegate_key=public("b"),
        now=NOW,
        ttl=60,
        audience="https://orders.example",
        limits=offline_limits(max_ttl=3600, max_delegation_depth=5, audience=("tasklease",)),
    )
    headers = {"scheme": "DPoP", "htm": "GET", "htu": HTU}
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(chain, dpop_proof=proof("b", chain, iat=NOW + 1), **headers)
    assert "audience" in refused.value.reason
    verifier = _verifier(broker_audiences=("tasklease",))
    token = verifier.verify(chain, dpop_proof=proof("b", chain, iat=NOW + 1, jti="p2"), **headers)
    assert token.aud == ("https://orders.example",)


class _MovingClock:
    def __init__(self) -> None:
        self.at = NOW + 1.0

    def now(self) -> float:
        return self.at


def test_a_remembered_chain_is_held_to_its_time_and_its_proof_at_every_use() -> None:
    clock = _MovingClock()
    verifier = Verifier(
        "https://broker.invalid",
        audience="https://orders.example",
        feed=False,
        clock=clock,
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=JWKS)),
    )
    verifier.start()
    chain = hops(("a", "b"), ttl=120)

    def use(jti: str) -> Any:
        at = int(clock.at)
        return verifier.verify(
            chain, scheme="DPoP", dpop_proof=proof("b", chain, iat=at, jti=jti), htm="GET", htu=HTU
        )

    assert use("p1").sub == nested("a", "b")
    assert verifier.stats()["cached_tokens"] == 1
    clock.at = NOW + 60
    assert use("p2").sub == nested("a", "b")  # remembered: checked again, not re-verified
    with pytest.raises(InvalidToken):
        use("p2")  # the proof is single use, cached chain or not
    clock.at = NOW + 120
    with pytest.raises(InvalidToken) as expired:
        use("p3")
    assert "expired" in expired.value.reason
    assert verifier.stats()["cached_tokens"] == 0


def test_a_chain_whose_root_key_is_new_fetches_the_keys_once() -> None:
    served: dict[str, Any] = {"keys": []}
    fetches = []

    def jwks(_request: httpx.Request) -> httpx.Response:
        fetches.append(1)
        return httpx.Response(200, json=served)

    verifier = Verifier(
        "https://broker.invalid",
        audience="https://orders.example",
        feed=False,
        clock=_Clock(),
        jwks_min_refresh_interval=0,
        transport=httpx.MockTransport(jwks),
    )
    verifier.start()
    served.update(JWKS)  # the broker rotated to a key the verifier has not fetched
    chain = hops(("a", "b"))
    token = verifier.verify(
        chain, scheme="DPoP", dpop_proof=proof("b", chain, iat=NOW + 1), htm="GET", htu=HTU
    )
    assert token.sub == nested("a", "b") and len(fetches) == 2


def test_one_key_flooding_the_replay_cache_does_not_lock_another_out() -> None:
    """docs/decisions.md 141: the holder of one DPoP-bound token sends fresh proofs as fast
    as they are accepted (with its own key, with fresh keys, and through chains it derives
    to delegate keys of its own making); it fills its quotas, never the verifier's cache,
    and another agent's proofs are still accepted."""
    verifier = _verifier(dpop_replay_cache_size=30, dpop_replay_per_key=5)
    over_quota = PROOF_OVER_QUOTA

    def bound(name: str, jti: str) -> str:
        """``name``'s token, bound to its DPoP key (not its agent key, which roots chains)."""
        jkt = jws.jwk_thumbprint(public(f"{name}-dpop"))
        return root_token(holder=name, jti=jti, extra={"cnf": {"jkt": jkt}})

    def use(token: str, signer: str, jti: str) -> str:
        try:
            verifier.verify(
                token,
                scheme="DPoP",
                dpop_proof=proof(signer, token, iat=NOW + 1, jti=jti),
                htm="GET",
                htu=HTU,
            )
        except InvalidToken as exc:
            assert exc.dpop_proof, exc.reason  # answered invalid_dpop_proof, as a replay is
            return exc.reason.removeprefix("offline chain: ")
        return "ok"

    mallory = bound("mallory", "m" * 32)
    own = [use(mallory, "mallory-dpop", f"own-{n}") for n in range(40)]
    assert own[:5] == ["ok"] * 5 and set(own[5:]) == {over_quota}
    fresh_keys = {use(mallory, f"fresh-{n}", f"fresh-{n}") for n in range(40)}
    assert fresh_keys == {"DPoP proof signed by another key than the token's cnf.jkt"}
    chains = [
        derive(
            mallory,
            key("mallory"),
            delegate=nested("mallory", f"sock-{n}"),
            delegate_key=public(f"sock-{n}"),
            now=NOW,
            ttl=60,
            jti=f"{n + 1:032x}",
        )
        for n in range(40)
    ]
    # Every chain has its own delegate key; all of them count against mallory's agent key.
    through_chains = [use(chain, f"sock-{n}", f"chain-{n}") for n, chain in enumerate(chains)]
    assert through_chains[:5] == ["ok"] * 5 and set(through_chains[5:]) == {over_quota}
    assert verifier.stats()["dpop_jtis"] == 10
    # Alice's proofs are accepted, directly and through a chain of her own.
    alice = bound("alice", "a" * 32)
    assert [use(alice, "alice-dpop", f"alice-{n}") for n in range(5)] == ["ok"] * 5
    assert use(hops(("bob", "carol")), "carol", "carol-1") == "ok"
    assert verifier.stats()["dpop_jtis"] == 16


def test_a_chain_is_refused_while_the_feed_has_never_proved_current() -> None:
    verifier = Verifier(
        "https://broker.invalid",
        audience="https://orders.example",
        credentials=AppCredentials("app", "secret"),
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=JWKS)),
    )  # never started: no revocation state to check the chain's elements against
    chain = hops(("a", "b"))
    with pytest.raises(RevocationStateStale):
        verifier.verify(chain, scheme="DPoP", dpop_proof=proof("b", chain), htm="GET", htu=HTU)


def test_a_remembered_chain_is_refused_once_its_root_key_leaves_the_key_set() -> None:
    served: list[dict[str, Any]] = [JWKS]
    verifier = Verifier(
        "https://broker.invalid",
        audience="https://orders.example",
        feed=False,
        jwks_ttl=0,
        jwks_min_refresh_interval=0,
        clock=_Clock(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=served[0])),
    )
    chain = hops(("a", "b"))

    def use(jti: str) -> Any:
        return verifier.verify(
            chain, scheme="DPoP", dpop_proof=proof("b", chain, jti=jti), htm="GET", htu=HTU
        )

    assert use("p1").sub == nested("a", "b")
    assert verifier.stats()["cached_tokens"] == 1
    served[0] = {"keys": []}  # the broker removed its key
    with pytest.raises(InvalidToken):
        use("p2")
