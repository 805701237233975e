"""Which keys verify a token at a resource server with federated domains: the domain the
token's claims name (its holder's trust domain), then its ``kid`` within that domain's
keys only. A key id never chooses a domain, so a peer publishing another domain's key id,
or the home broker's, takes nothing from it; and a token naming one domain but signed by
another's key is refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundle_support import CA, CTX, Document, Served, admin, make_broker, make_ca, serve_broker
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import SystemClock
from tasklease.core.tokens import KIND_AGENT, mint
from tasklease.rules import jws
from tasklease.rules.bundle import TrustBundle, serialize_bundle
from tasklease.verify import FederatedDomain, InvalidToken, Verifier

AUDIENCE = "orders-api"
HOME = "https://a.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cert(ca: CA) -> tuple[Path, Path]:
    return ca.server("127.0.0.1")


def _broker(domain: str) -> Broker:
    return make_broker(domain, clock=SystemClock(), audience=(AUDIENCE,))


@pytest.fixture
def home() -> Iterator[tuple[Broker, Served]]:
    broker = _broker("a.example")
    with serve_broker(broker) as served:
        yield broker, served


@pytest.fixture
def peer_b(cert: tuple[Path, Path]) -> Iterator[tuple[Broker, Served]]:
    broker = _broker("b.example")
    with serve_broker(broker, cert) as served:
        yield broker, served


def _agent(domain: str) -> str:
    return f"spiffe://{domain}/agent/orch/task/0123456789abcdef"


def _token(broker: Broker, scope: str = "read:data:1", *, iss: str = "", sub: str = "") -> str:
    """A token ``broker`` signs: its own (issuer, agent) unless ``iss`` or ``sub`` say."""
    token, _ = mint(
        broker.keyring,
        kind=KIND_AGENT,
        iss=iss or broker.config.issuer,
        sub=sub or _agent(broker.config.trust_domain),
        aud=(AUDIENCE,),
        iat=int(time.time()),
        ttl=120,
        scope=(scope,),
        client_id="app-1",
        task_id="task",
        orch_id="orch",
    )
    return token


def _resigned(token: str, key: SigningKey, kid: str, **claims: Any) -> str:
    """``token``'s claims (with ``claims`` changed) signed by ``key`` under ``kid``."""
    _, payload = jws.decode_unverified(token)
    payload.update(claims)
    body = json.dumps(payload, separators=(",", ":")).encode()
    return jws.encode(body, typ="at+jwt", kid=kid, key=key)


def _b(served: Served, ca: CA) -> FederatedDomain:
    return FederatedDomain(
        trust_domain="b.example",
        bundle_endpoint=f"{served.url}/v1/federation/bundle",
        issuer="https://b.example",
        scope_ceiling=("read:data:*",),
        ca_file=str(ca.path),
    )


def _c(served: Served, ca: CA) -> FederatedDomain:
    return FederatedDomain(
        trust_domain="c.example",
        bundle_endpoint=f"{served.url}/v1/federation/bundle",
        issuer="https://c.example",
        scope_ceiling=("write:data:*",),
        ca_file=str(ca.path),
    )


def _verifier(home: Served, *domains: FederatedDomain) -> Verifier:
    verifier = Verifier(home.url, audience=AUDIENCE, issuer=HOME, feed=False, federations=domains)
    verifier.start()
    return verifier


def _reason(verifier: Verifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_a_peer_publishing_another_domains_kid_does_not_block_its_tokens(
    home: tuple[Broker, Served],
    peer_b: tuple[Broker, Served],
    ca: CA,
    cert: tuple[Path, Path],
) -> None:
    # Would fail if: a kid published by two domains made the verifier trust neither (C
    # copying B's public kid into its own bundle shut B's tokens out), or picked C's key.
    _local, home_served = home
    b, b_served = peer_b
    (b_kid,) = b.keyring.kids()
    c_key = SigningKey.generate()
    c_bundle = serialize_bundle(TrustBundle("c.example", 1, 60, {b_kid: bytes(c_key.verify_key)}))
    with (
        Served(Document(c_bundle).app(), cert) as c_served,
        _verifier(home_served, _b(b_served, ca), _c(c_served, ca)) as verifier,
    ):
        assert verifier.stats()["federations"]["c.example"]["kids"] == [b_kid]
        genuine = _token(b)
        verified = verifier.verify(genuine)
        assert (verified.iss, verified.sub) == ("https://b.example", _agent("b.example"))
        assert asyncio.run(verifier.averify(_token(b, "read:data:2"))).scope == ("read:data:2",)
        # The same kid names C's key in C's bundle, for C's tokens only, within C's ceiling.
        c_token = _resigned(
            genuine, c_key, b_kid, iss="https://c.example", sub=_agent("c.example"),
            scope="write:data:1",
        )  # fmt: skip
        assert verifier.verify(c_token).iss == "https://c.example"
        # A fresh verifier answers alike on its first, async, verification of B's token.
        with _verifier(home_served, _b(b_served, ca), _c(c_served, ca)) as fresh:
            assert asyncio.run(fresh.averify(genuine)).iss == "https://b.example"


def test_a_token_naming_one_domain_signed_with_anothers_key_is_refused(
    home: tuple[Broker, Served],
    peer_b: tuple[Broker, Served],
    ca: CA,
    cert: tuple[Path, Path],
) -> None:
    # Would fail if: choosing by the token's claims could be turned around, so that C's
    # key under B's kid (which C's bundle maps to C's key) verified a token claiming B's
    # agent or the home broker; or (as before the claims chose) B's genuine token beside
    # those forgeries were refused because two domains publish its kid.
    local, home_served = home
    b, b_served = peer_b
    (b_kid,) = b.keyring.kids()
    c_key = SigningKey.generate()
    c_bundle = serialize_bundle(TrustBundle("c.example", 1, 60, {b_kid: bytes(c_key.verify_key)}))
    with (
        Served(Document(c_bundle).app(), cert) as c_served,
        _verifier(home_served, _b(b_served, ca), _c(c_served, ca)) as verifier,
    ):
        genuine = _token(b)
        assert verifier.verify(genuine).iss == "https://b.example"
        # B's issuer and agent, C's key: B's bundle decides, and the signature fails.
        assert _reason(verifier, _resigned(genuine, c_key, b_kid)) == "bad signature"
        # C's issuer but B's agent as holder: still B's keys, still refused.
        as_c = _resigned(genuine, c_key, b_kid, iss="https://c.example")
        assert _reason(verifier, as_c) == "bad signature"
        # The home broker's issuer and agent: its JWKS alone, which has no such kid,
        # signed by C's key or by B's own.
        home_claims = {"iss": HOME, "sub": _agent("a.example")}
        assert _reason(verifier, _resigned(genuine, c_key, b_kid, **home_claims)) == "unknown kid"
        b_signed = _token(b, iss=HOME, sub=_agent("a.example"))
        assert _reason(verifier, b_signed) == "unknown kid"
        with pytest.raises(InvalidToken) as caught:
            asyncio.run(verifier.averify(b_signed))
        assert caught.value.reason == "unknown kid"
        # The home issuer on B's agent and key: B's token, which B may not issue as A.
        assert _reason(verifier, _resigned(genuine, c_key, b_kid, iss=HOME)) == "bad signature"
        assert verifier.verify(_token(local)).iss == HOME


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_peer_publishing_the_home_brokers_new_kid_does_not_delay_its_tokens(
    home: tuple[Broker, Served], ca: CA, cert: tuple[Path, Path], path: str
) -> None:
    # Would fail if: a kid some federated bundle holds were never looked for in the
    # broker's JWKS: a peer copying the broker's freshly rotated kid would have the
    # broker's new tokens refused until the JWKS's next refresh by age (jwks_ttl).
    local, home_served = home
    document = Document(serialize_bundle(TrustBundle("b.example", 1, 60, {})))
    with Served(document.app(), cert) as b_served:
        verifier = _verifier(home_served, _b(b_served, ca))
        with verifier:
            assert verifier.verify(_token(local)).iss == HOME
            fetches = verifier.stats()["jwks_fetches"]
            new_kid, _previous = local.rotate_signing_key(admin(local).claims, CTX)
            squatter = SigningKey.generate()
            document.body = serialize_bundle(
                TrustBundle("b.example", 2, 60, {new_kid: bytes(squatter.verify_key)})
            )
            federation = verifier._federation
            assert federation is not None
            federation.refresh_all()  # the peer's next bundle is in before the new token
            assert verifier.stats()["federations"]["b.example"]["kids"] == [new_kid]
            token = _token(local, "write:orders:1")
            if path == "sync":
                verified = verifier.verify(token)
            else:
                verified = asyncio.run(verifier.averify(token))
            assert (verified.iss, verified.scope) == (HOME, ("write:orders:1",))
            assert verifier.stats()["jwks_fetches"] == fetches + 1
            assert new_kid in verifier.stats()["kids"]
            # The peer's key under that kid verifies nothing of the broker's.
            forged = _resigned(token, squatter, new_kid, jti="forged-1")
            assert _reason(verifier, forged) == "bad signature"
