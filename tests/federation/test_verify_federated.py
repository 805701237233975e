"""``tasklease.verify`` accepting tokens of federated trust domains: each domain's own
bundle (fetched over HTTPS from its bundle endpoint, with a test CA), issuer, agents and
scope ceiling; nothing beyond, and never another domain's keys."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bundle_support import (
    CA,
    CTX,
    Served,
    admin,
    make_broker,
    make_ca,
    serve_broker,
    trickling_app,
)

from tasklease.bounds import TOTAL_TIMES
from tasklease.core.broker import Broker
from tasklease.core.clock import SystemClock
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import KIND_AGENT, mint
from tasklease.rules.bundle import parse_bundle
from tasklease.verify import FederatedDomain, InvalidToken, RevocationStateStale, Verifier
from tasklease.verify._federation import FederationError, Federations

AUDIENCE = "orders-api"


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
    """The resource server's own broker (a.example), over plain HTTP here."""
    broker = _broker("a.example")
    with serve_broker(broker) as served:
        yield broker, served


@pytest.fixture
def peer(cert: tuple[Path, Path]) -> Iterator[tuple[Broker, Served]]:
    broker = _broker("b.example")
    with serve_broker(broker, cert) as served:
        yield broker, served


def _token(
    broker: Broker,
    scope: tuple[str, ...],
    *,
    sub: str | None = None,
    iss: str | None = None,
    keyring: KeyRing | None = None,
    ttl: int = 120,
) -> str:
    td = broker.config.trust_domain
    token, _ = mint(
        keyring or broker.keyring,
        kind=KIND_AGENT,
        iss=iss or broker.config.issuer,
        sub=sub or f"spiffe://{td}/agent/orch/task/0123456789abcdef",
        aud=(AUDIENCE,),
        iat=int(time.time()),
        ttl=ttl,
        scope=scope,
        client_id="app-1",
        task_id="task",
        orch_id="orch",
    )
    return token


def _domain(peer: Served, ca: CA, **extra: object) -> FederatedDomain:
    values: dict[str, object] = {
        "trust_domain": "b.example",
        "bundle_endpoint": f"{peer.url}/v1/federation/bundle",
        "issuer": "https://b.example",
        "scope_ceiling": ("read:data:*",),
        "ca_file": str(ca.path),
    }
    values.update(extra)
    return FederatedDomain(**values)  # type: ignore[arg-type]


def _verifier(home: Served, *domains: FederatedDomain) -> Verifier:
    verifier = Verifier(
        home.url,
        audience=AUDIENCE,
        issuer="https://a.example",
        feed=False,
        federations=domains,
    )
    verifier.start()
    return verifier


def test_federated_token_within_its_ceiling_is_accepted(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA
) -> None:
    local, home_served = home
    remote, peer_served = peer
    with _verifier(home_served, _domain(peer_served, ca)) as verifier:
        verified = verifier.verify(_token(remote, ("read:data:42",)))
        assert verified.iss == "https://b.example"
        assert verified.sub.startswith("spiffe://b.example/")
        assert verified.has_scope("read:data:42")
        # The home broker's own tokens are verified as before, with its own JWKS.
        assert verifier.verify(_token(local, ("write:orders:1",))).iss == "https://a.example"
        published = parse_bundle(remote.trust_bundle(), "b.example").sequence
        assert verifier.stats()["federations"]["b.example"]["sequence"] == published
        # The async path takes the same decisions.
        again = asyncio.run(verifier.averify(_token(remote, ("read:data:7",))))
        assert again.scope == ("read:data:7",)


def test_beyond_the_ceiling_or_another_domains_identity_is_refused(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA
) -> None:
    local, home_served = home
    remote, peer_served = peer
    with _verifier(home_served, _domain(peer_served, ca)) as verifier:
        cases = {
            "scope beyond": ("ceiling", _token(remote, ("read:data:1", "write:data:1"))),
            # Signed with B's key but naming A's issuer: B may only speak for itself.
            "issuer": (
                "issuer mismatch",
                _token(remote, ("read:data:1",), iss="https://a.example"),
            ),
            # Signed with B's key but held by A's agent: A's token, and A's keys lack B's kid.
            "holder": (
                "unknown kid",
                _token(
                    remote, ("read:data:1",), sub="spiffe://a.example/agent/o/t/0123456789abcdef"
                ),
            ),
            # A key in no configured bundle, claiming to be B: unknown.
            "unknown": (
                "unknown kid",
                _token(remote, ("read:data:1",), keyring=KeyRing.generate()),
            ),
            "lifetime": ("lifetime", _token(remote, ("read:data:1",), ttl=7200)),
        }
        for why, (reason, token) in cases.items():
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(token)
            assert reason in caught.value.reason, (why, caught.value.reason)
        # A's own tokens are not held to B's ceiling, nor B's to A's issuer.
        assert verifier.verify(_token(local, ("write:data:1",))).scope == ("write:data:1",)


@pytest.mark.parametrize(
    "grant",
    [
        # A payment grant: the ceiling holds scopes, nothing bounds its amount.
        {
            "type": "resource_access",
            "actions": ["pay"],
            "limits": {"max_amount": "1000000", "currency": "EUR"},
        },
        # A scope grant travels in authorization_details, not in scope: it would escape
        # the read:data:* ceiling.
        {"type": "scope", "scope": "write:orders:*"},
        # Even one the ceiling would cover: a domain's ceiling is scopes only.
        {"type": "scope", "scope": "read:data:1"},
    ],
    ids=["payment", "scope-beyond", "scope-within"],
)
def test_a_federated_token_carrying_structured_grants_is_refused(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA, grant: dict[str, object]
) -> None:
    _local, home_served = home
    remote, peer_served = peer
    token, _ = mint(
        remote.keyring,
        kind=KIND_AGENT,
        iss=remote.config.issuer,
        sub="spiffe://b.example/agent/orch/task/0123456789abcdef",
        aud=(AUDIENCE,),
        iat=int(time.time()),
        ttl=120,
        scope=("read:data:1",),  # within the ceiling: only the grant is at fault
        client_id="app-1",
        task_id="task",
        orch_id="orch",
        details=(grant,),
    )
    with _verifier(home_served, _domain(peer_served, ca)) as verifier:
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token)
        assert "authorization_details" in caught.value.reason
        with pytest.raises(InvalidToken):
            asyncio.run(verifier.averify(token))
        # The same scope without the grant is accepted.
        assert verifier.verify(_token(remote, ("read:data:1",))).scope == ("read:data:1",)


def test_a_federated_tokens_failed_dpop_proof_is_named_as_such(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA
) -> None:
    """RFC 9449 section 7.1: a request whose DPoP proof fails is answered
    ``invalid_dpop_proof`` (the client retries with a fresh proof), not ``invalid_token``
    (the client drops a good token): for a federated domain's token as for the broker's."""
    local, home_served = home
    remote, peer_served = peer
    bound = {"jkt": "A" * 43}
    tokens = {}
    for name, broker in (("home", local), ("federated", remote)):
        td = broker.config.trust_domain
        tokens[name], _ = mint(
            broker.keyring,
            kind=KIND_AGENT,
            iss=broker.config.issuer,
            sub=f"spiffe://{td}/agent/orch/task/0123456789abcdef",
            aud=(AUDIENCE,),
            iat=int(time.time()),
            ttl=120,
            scope=("read:data:1",),
            client_id="app-1",
            cnf=bound,
        )
    presented = {"scheme": "DPoP", "dpop_proof": "not.a.proof", "htm": "GET",
                 "htu": "https://orders.example/data"}  # fmt: skip
    with _verifier(home_served, _domain(peer_served, ca)) as verifier:
        for name, token in tokens.items():
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(token, **presented)
            assert "DPoP proof" in caught.value.reason, name
            assert caught.value.dpop_proof, name


def test_an_unconfigured_domain_is_refused(
    home: tuple[Broker, Served], peer: tuple[Broker, Served]
) -> None:
    _local, home_served = home
    remote, _peer_served = peer
    with _verifier(home_served) as verifier, pytest.raises(InvalidToken) as caught:
        verifier.verify(_token(remote, ("read:data:1",)))
    assert caught.value.reason == "unknown kid"


def test_a_rotation_in_the_peer_is_fetched_for_its_new_kid(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA
) -> None:
    _local, home_served = home
    remote, peer_served = peer
    verifier = Verifier(
        home_served.url,
        audience=AUDIENCE,
        issuer="https://a.example",
        feed=False,
        jwks_min_refresh_interval=0.0,
        federations=[_domain(peer_served, ca)],
    )
    with verifier:
        verifier.verify(_token(remote, ("read:data:1",)))
        remote.rotate_signing_key(admin(remote).claims, CTX)
        verified = verifier.verify(_token(remote, ("read:data:2",)))
        assert verified.scope == ("read:data:2",)
        published = parse_bundle(remote.trust_bundle(), "b.example").sequence
        assert verifier.stats()["federations"]["b.example"]["sequence"] == published


def test_the_async_path_refreshes_bundles_by_their_hint_without_a_feed(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA
) -> None:
    """Decision 143: as the sync path does, an async verification fetches a bundle whose
    refresh hint has passed (in a thread), so that a key the domain removed stops
    verifying, and its tokens are not refused once the bundle is past its max age."""
    _local, home_served = home
    remote, peer_served = peer
    verifier = Verifier(
        home_served.url,
        audience=AUDIENCE,
        issuer="https://a.example",
        feed=False,
        federations=[_domain(peer_served, ca, max_bundle_age=2.0)],  # hint: 1 s
    )

    async def scenario() -> None:
        assert (await verifier.averify(_token(remote, ("read:data:1",)))).iss == (
            "https://b.example"
        )
        await asyncio.sleep(2.2)  # past the hint, and past the bundle's max age
        verified = await verifier.averify(_token(remote, ("read:data:2",)))
        assert verified.scope == ("read:data:2",)

    with verifier:
        asyncio.run(scenario())
        assert verifier.stats()["federations"]["b.example"]["fetches"] == 2


def test_two_domains_keep_their_own_keys_and_ceilings(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA, cert: tuple[Path, Path]
) -> None:
    _local, home_served = home
    remote, peer_served = peer
    third = _broker("c.example")
    with serve_broker(third, cert) as third_served:
        c_domain = FederatedDomain(
            trust_domain="c.example",
            bundle_endpoint=f"{third_served.url}/v1/federation/bundle",
            issuer="https://c.example",
            scope_ceiling=("write:data:*",),
            ca_file=str(ca.path),
        )
        with _verifier(home_served, _domain(peer_served, ca), c_domain) as verifier:
            assert verifier.verify(_token(third, ("write:data:1",))).iss == "https://c.example"
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(_token(third, ("read:data:1",)))  # B's ceiling, not C's
            assert "ceiling" in caught.value.reason
            # C's key claiming to be B (B's issuer and agent): the token is B's by its
            # holder, and B's bundle lacks C's kid.
            forged = _token(
                third,
                ("read:data:1",),
                iss="https://b.example",
                sub="spiffe://b.example/agent/o/t/0123456789abcdef",
            )
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(forged)
            assert caught.value.reason == "unknown kid"


def test_a_bundle_past_its_max_age_fails_closed(peer: tuple[Broker, Served], ca: CA) -> None:
    _remote, served = peer
    now = [1000.0]
    federations = Federations(
        [_domain(served, ca, max_bundle_age=60)],
        timeout=5.0,
        min_interval=30.0,
        monotonic=lambda: now[0],
    )
    federations.refresh_all()
    kid = _remote.keyring.active_kid
    domain = federations.claimed({"sub": "spiffe://b.example/agent/o/t/0123456789abcdef"})
    assert domain is not None
    assert federations.resolve_in(domain)(kid) is not None
    served.stop()  # the endpoint goes away: the last good bundle serves until max age
    now[0] += 45
    federations.refresh_due()  # due (half the max age), fails, keeps the last good one
    assert federations.stats()["b.example"]["last_error"].startswith("ConnectError")
    assert federations.resolve_in(domain)(kid) is not None
    now[0] += 16
    with pytest.raises(FederationError, match="too old"):
        federations.resolve_in(domain)


def test_configuration_is_checked() -> None:
    good = {
        "trust_domain": "b.example",
        "bundle_endpoint": "https://b.example/v1/federation/bundle",
        "issuer": "https://b.example",
        "scope_ceiling": ("read:data:*",),
    }
    for bad in (
        {"trust_domain": "B.example"},
        {"bundle_endpoint": "http://b.example/bundle"},
        {"bundle_endpoint": "https://u:p@b.example/bundle"},
        {"issuer": ""},
        {"scope_ceiling": ()},
        {"scope_ceiling": ("read:*:*",)},
        {"max_bundle_age": 0},
    ):
        with pytest.raises(ValueError):
            FederatedDomain(**{**good, **bad})  # type: ignore[arg-type]
    domain = FederatedDomain(**good)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="twice"):
        Federations([domain, domain], timeout=1.0, min_interval=1.0)


def test_a_domain_publishing_the_brokers_key_id_cannot_take_its_tokens(
    home: tuple[Broker, Served], ca: CA, cert: tuple[Path, Path]
) -> None:
    """A federated bundle naming one of the broker's own key ids (with a key of its own)
    changes nothing for the broker's tokens: the broker's JWKS holds that id, and its key
    ids are its keys' thumbprints. The domain's tokens signed under it are refused."""
    from bundle_support import Document
    from nacl.signing import SigningKey

    from tasklease.rules.bundle import TrustBundle, serialize_bundle

    local, home_served = home
    (kid,) = local.keyring.kids()
    squatter = SigningKey.generate()
    bundle = serialize_bundle(TrustBundle("b.example", 1, 60, {kid: bytes(squatter.verify_key)}))
    document = Document(bundle)
    with Served(document.app(), cert) as served:
        domain = _domain(served, ca)
        with _verifier(home_served, domain) as verifier:
            assert verifier.stats()["federations"]["b.example"]["sequence"] == 1  # loaded
            verified = verifier.verify(_token(local, ("read:data:1",)))
            assert verified.iss == "https://a.example"
            forged = KeyRing.generate()
            with pytest.raises(InvalidToken):
                verifier.verify(_token(local, ("read:data:1",), keyring=forged))


def test_a_peer_that_trickles_its_bundle_holds_one_fetch_for_a_bounded_time(
    ca: CA,
) -> None:
    # Would fail if: a bundle endpoint sending a byte every half second kept the fetch
    # going for as long as it liked (httpx's timeout bounds each read, not the request),
    # and every verification needing the domain's keys waited on that fetch's lock.
    app = trickling_app()
    with Served(app, ca.server("127.0.0.1")) as slow:
        federations = Federations([_domain(slow, ca)], timeout=1.0, min_interval=0.0)
        domain = federations._domains["b.example"]
        began = time.monotonic()
        waiter: dict[str, float | bool] = {}

        def second_caller() -> None:
            time.sleep(0.2)  # while the first fetch holds the lock
            started = time.monotonic()
            waiter["fetched"] = federations._fetch(domain)
            waiter["waited"] = time.monotonic() - started

        other = threading.Thread(target=second_caller)
        other.start()
        assert federations._fetch(domain) is False  # cut off at its total deadline
        took = time.monotonic() - began
        other.join(30)
        assert took < TOTAL_TIMES * 1.0 + 5, f"the fetch took {took:.1f} s"
        assert waiter["fetched"] is False and float(waiter["waited"]) < 1.0 + 3
        assert domain.last_error, "the cut-off fetch names why"


def test_a_federated_token_is_held_to_the_home_feeds_revocations_and_freshness(
    home: tuple[Broker, Served], peer: tuple[Broker, Served], ca: CA
) -> None:
    """A federated domain's token is checked against this verifier's revocation state:
    refused once the home broker revoked its agent, and refused while the feed has never
    proved current."""
    local, home_served = home
    remote, peer_served = peer
    revoked = _token(remote, ("read:data:1",), sub="spiffe://b.example/agent/o/t/aaaaaaaaaaaaaaaa")
    other = _token(remote, ("read:data:1",), sub="spiffe://b.example/agent/o/t/bbbbbbbbbbbbbbbb")
    bearer = admin(local).token
    answer = httpx.post(
        f"{home_served.url}/v1/revoke",
        json={"level": "agent", "target": "spiffe://b.example/agent/o/t/aaaaaaaaaaaaaaaa"},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert answer.status_code == 200, answer.text
    following = Verifier(
        home_served.url,
        audience=AUDIENCE,
        issuer="https://a.example",
        credentials=lambda: bearer,
        federations=(_domain(peer_served, ca),),
    )
    with pytest.raises(RevocationStateStale):  # not started: never proved current
        following.verify(other)
    with following:  # started: synced, the revocation held
        assert following.verify(other).sub.endswith("/bbbbbbbbbbbbbbbb")
        with pytest.raises(InvalidToken) as caught:
            following.verify(revoked)
        assert "revoked" in caught.value.reason
