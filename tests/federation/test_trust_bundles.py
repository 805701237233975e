"""Trust bundles between brokers over real HTTPS on loopback: the bundle endpoint, the
refresher (SPIFFE Federation ``https_web``), failing closed, and forged bundles."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bundle_support import (
    CA,
    CTX,
    START,
    Document,
    Served,
    admin,
    client_context,
    make_broker,
    make_ca,
    serve_broker,
    trickling_app,
)
from nacl.signing import SigningKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.federation import UntrustedDomain
from tasklease.core.keys import jwk_thumbprint
from tasklease.core.store import AuditQuery
from tasklease.federation import FetchError, fetch_bundle, refresh_domain, refresh_due, refresher
from tasklease.rules.bundle import TrustBundle, parse_bundle, serialize_bundle

PEER = "b.example"
LOCAL = "a.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca: CA) -> tuple[Path, Path]:
    return ca.server("127.0.0.1", "localhost")


@pytest.fixture
def peer(server_cert: tuple[Path, Path]) -> Iterator[tuple[Broker, Served]]:
    """Broker B: its bundle endpoint over HTTPS, a refresh hint of 2 s."""
    broker = make_broker(PEER, federation_refresh_hint=2)
    with serve_broker(broker, server_cert) as served:
        yield broker, served


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def local(clock: ManualClock) -> Broker:
    """Broker A, in process, on a manual clock (bundle ages are read from it)."""
    return make_broker(LOCAL, clock=clock)


def _bundle_url(served: Served) -> str:
    return f"{served.url}/v1/federation/bundle"


def _add(local: Broker, ca: CA, url: str, **fields: Any) -> Any:
    record, _ = local.federation.add(
        admin(local).claims,
        trust_domain=PEER,
        bundle_endpoint_url=url,
        ca_pem=ca.pem,
        ctx=CTX,
        **fields,
    )
    return record


def _rotate(broker: Broker) -> None:
    broker.rotate_signing_key(admin(broker).claims, CTX)


# --- the bundle endpoint -------------------------------------------------------------------


def test_endpoint_serves_the_jwks_keys_as_a_spiffe_bundle(
    peer: tuple[Broker, Served], ca: CA
) -> None:
    broker, served = peer
    with httpx.Client(verify=client_context(ca)) as client:
        answer = client.get(_bundle_url(served))
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "public, max-age=2"
        document = answer.json()
        # The first bundle's sequence is the time it was published, in ms (decision 154).
        first = document["spiffe_sequence"]
        assert first > 1_700_000_000_000 and document["spiffe_refresh_hint"] == 2
        jwks = client.get(f"{served.url}/.well-known/jwks.json").json()
        assert [k["kid"] for k in document["keys"]] == [k["kid"] for k in jwks["keys"]]
        assert [k["x"] for k in document["keys"]] == [k["x"] for k in jwks["keys"]]
        assert {k["use"] for k in document["keys"]} == {"jwt-svid"}
        # A rotation over the admin API: the new key is published with the next sequence,
        # the old one stays until it is retired.
        token = admin(broker).token
        rotated = client.post(
            f"{served.url}/v1/admin/keys/rotate", headers={"Authorization": f"Bearer {token}"}
        )
        assert rotated.status_code == 200, rotated.text
        again = client.get(_bundle_url(served)).json()
        assert again["spiffe_sequence"] > first
        assert [k["kid"] for k in again["keys"]] == rotated.json()["kids"]
        # No client authentication is asked for, and none is needed (SPIFFE Federation).
        assert "www-authenticate" not in answer.headers


# --- the refresher -----------------------------------------------------------------------------


def test_refresher_picks_up_a_rotation_on_the_hint(
    peer: tuple[Broker, Served], ca: CA, local: Broker, clock: ManualClock
) -> None:
    broker, served = peer
    record = _add(local, ca, _bundle_url(served))
    assert refresh_due(local) == 1
    assert dict(local.federation.trusted_keys(PEER, clock.now())) == {
        kid: broker.keyring.public_key(kid) for kid in broker.keyring.kids()
    }
    _rotate(broker)
    assert refresh_due(local) == 0  # not due before the hint (2 s)
    clock.advance(2)
    assert refresh_due(local) == 1
    assert list(local.federation.trusted_keys(PEER, clock.now())) == broker.keyring.kids()
    stored = local.federation.record(PEER)
    assert (
        parse_bundle(stored.bundle, PEER).sequence
        == parse_bundle(broker.trust_bundle(), PEER).sequence
    )
    assert stored.created_at == record.created_at and stored.last_error == ""
    updates, _ = local.audit_events(AuditQuery(event_type="federation_bundle_updated"))
    first = int(START * 1000)  # the time in milliseconds, then one more
    assert len(updates) == 2 and f"sequence={first}->{first + 1}" in updates[1].detail


def test_endpoint_down_keeps_the_last_good_bundle_until_max_age_then_fails_closed(
    server_cert: tuple[Path, Path], ca: CA, local: Broker, clock: ManualClock
) -> None:
    broker = make_broker(PEER, federation_refresh_hint=2)
    served = serve_broker(broker, server_cert)
    _add(local, ca, _bundle_url(served), max_bundle_age=60)
    assert refresh_due(local) == 1
    kids = broker.keyring.kids()
    served.stop()
    for _ in range(5):  # every failed attempt keeps the last good bundle
        clock.advance(10)
        assert refresh_due(local) == 0
        assert list(local.federation.trusted_keys(PEER, clock.now())) == kids
    failing = local.federation.record(PEER)
    assert failing.last_error.startswith("fetch failed: ConnectError")
    assert failing.fetched_at == START
    clock.advance(11)  # 61 s after the last good fetch
    with pytest.raises(UntrustedDomain) as caught:
        local.federation.trusted_keys(PEER, clock.now())
    assert "beyond its max_bundle_age" in caught.value.reason
    metrics = local.metrics.render().decode()
    series = '{tenant="default",trust_domain="b.example"}'
    assert f"tasklease_federation_refresh_failures_total{series} 5.0" in metrics
    # One audit event for the run of identical failures, not one per attempt.
    refused, _ = local.audit_events(AuditQuery(event_type="federation_bundle_refused"))
    assert len(refused) == 1


# --- forged and broken bundles ----------------------------------------------------------


def _peer_bundle(*keys: SigningKey, sequence: int | None) -> bytes:
    raw = {jwk_thumbprint(bytes(k.verify_key)): bytes(k.verify_key) for k in keys}
    return serialize_bundle(TrustBundle(PEER, sequence, 2, raw))


def test_untrusted_certificate_is_refused(
    tmp_path: Path, ca: CA, local: Broker, clock: ManualClock
) -> None:
    rogue = make_ca(tmp_path, "rogue CA")
    document = Document(_peer_bundle(SigningKey.generate(), sequence=1))
    with Served(document.app(), rogue.server("127.0.0.1")) as served:
        _add(local, ca, served.url)
        assert refresh_due(local) == 0
        assert document.hits == 0  # the handshake failed: nothing was even asked
    record = local.federation.record(PEER)
    assert record.bundle == "" and "TLS" in record.last_error
    assert "certificate verify failed" in record.last_error or "unable" in record.last_error
    with pytest.raises(UntrustedDomain):
        local.federation.trusted_keys(PEER, clock.now())


def test_system_trust_store_does_not_trust_the_test_ca(
    server_cert: tuple[Path, Path], local: Broker
) -> None:
    document = Document(_peer_bundle(SigningKey.generate(), sequence=1))
    with Served(document.app(), server_cert) as served:
        record, _ = local.federation.add(
            admin(local).claims, trust_domain=PEER, bundle_endpoint_url=served.url, ctx=CTX
        )
        assert not refresh_domain(local, record)
    assert "TLS" in local.federation.record(PEER).last_error


def test_certificate_for_another_host_is_refused(tmp_path: Path, ca: CA, local: Broker) -> None:
    # A bundle served for another domain's URL: the CA is trusted, but the certificate
    # names another host than the URL's (RFC 6125), so this is not the endpoint we asked.
    document = Document(_peer_bundle(SigningKey.generate(), sequence=1))
    with Served(document.app(), ca.server("c.example", label="other-host")) as served:
        _add(local, ca, served.url)
        assert refresh_due(local) == 0
    record = local.federation.record(PEER)
    assert record.bundle == ""
    assert "TLS" in record.last_error and "mismatch" in record.last_error


def test_malformed_bundle_sequence_going_back_and_oversize_are_refused(
    server_cert: tuple[Path, Path], ca: CA, local: Broker, clock: ManualClock
) -> None:
    good, forged = SigningKey.generate(), SigningKey.generate()
    good_kid = jwk_thumbprint(bytes(good.verify_key))
    document = Document(_peer_bundle(good, sequence=5))
    with Served(document.app(), server_cert) as served:
        record = _add(local, ca, served.url, max_bundle_age=3600)
        assert refresh_domain(local, record)
        for body, status, why in (
            (_peer_bundle(forged, sequence=4), 200, "lower than the last good"),
            (_peer_bundle(forged, sequence=None), 200, "lower than the last good"),
            (b'{"keys":[{"kty":"OKP"}]', 200, "invalid JSON"),
            (b'{"keys":[],"keys":[]}', 200, "duplicate key"),
            (json.dumps({"keys": [], "pad": "x" * 70000}).encode(), 200, "larger than"),
            (b"{}", 500, "HTTP status 500"),
        ):
            document.body, document.status = body, status
            assert not refresh_domain(local, record), why
            current = local.federation.record(PEER)
            assert why in current.last_error
            assert list(local.federation.trusted_keys(PEER, clock.now())) == [good_kid]
        # Back to a good one, with a higher sequence: accepted.
        document.body, document.status = _peer_bundle(forged, sequence=6), 200
        assert refresh_domain(local, record)
    assert list(local.federation.trusted_keys(PEER, clock.now())) == [
        jwk_thumbprint(bytes(forged.verify_key))
    ]


def test_a_compressed_bundle_is_refused(server_cert: tuple[Path, Path], ca: CA) -> None:
    # Decompressed, a small body could grow far past the size cap before it is counted.
    bomb = gzip.compress(b'{"keys":[],"pad":"' + b"a" * 10_000_000 + b'"}')
    document = Document(bomb, headers=[("content-encoding", "gzip")])
    with Served(document.app(), server_cert) as served:
        with pytest.raises(FetchError, match="compressed"):
            fetch_bundle(served.url, ca_pem=ca.pem)
        assert document.hits == 1


def test_redirects_are_followed_only_to_https(
    server_cert: tuple[Path, Path], ca: CA, local: Broker
) -> None:
    bundle = _peer_bundle(SigningKey.generate(), sequence=1)
    target = Document(bundle)
    with Served(target.app(), server_cert) as real:
        hop = Document(b"", 307, [("location", f"{real.url}/bundle")])
        with Served(hop.app(), server_cert) as redirecting:
            assert fetch_bundle(f"{redirecting.url}/x", ca_pem=ca.pem) == bundle
            hop.headers["location"] = f"http://127.0.0.1:{real.port}/bundle"
            with pytest.raises(FetchError, match="not an https URL"):
                fetch_bundle(f"{redirecting.url}/x", ca_pem=ca.pem)
            hop.headers["location"] = f"{redirecting.url}/again"  # to itself, forever
            with pytest.raises(FetchError, match="too many redirects"):
                fetch_bundle(f"{redirecting.url}/x", ca_pem=ca.pem)
            hop.status, hop.headers["location"] = 301, f"{real.url}/bundle"
            with pytest.raises(FetchError, match="HTTP status 301"):
                fetch_bundle(f"{redirecting.url}/x", ca_pem=ca.pem)


def test_removing_or_replacing_a_domain_wins_over_a_fetch_in_flight(
    peer: tuple[Broker, Served], ca: CA, local: Broker, clock: ManualClock
) -> None:
    _broker, served = peer
    stale = _add(local, ca, _bundle_url(served))
    local.federation.remove(admin(local).claims, PEER, CTX)
    assert not refresh_domain(local, stale)  # the fetch finished after the removal
    assert local.federation.list_federations() == []
    with pytest.raises(UntrustedDomain):
        local.federation.trusted_keys(PEER, clock.now())


# --- slow peers ----------------------------------------------------------------------------


def test_a_peer_that_trickles_its_bundle_is_cut_off_at_the_fetch_deadline(
    server_cert: tuple[Path, Path], ca: CA
) -> None:
    # Would fail if: a bundle endpoint sending a byte every half second kept the broker's
    # fetch going for its whole minute (httpx's timeout bounds each read, not a request).
    app = trickling_app()
    with Served(app, server_cert) as slow:
        began = time.monotonic()
        with pytest.raises(FetchError, match="no answer within 3 s"):
            fetch_bundle(slow.url, ca_pem=ca.pem, timeout=1.0)
        took = time.monotonic() - began
    assert took < refresher.TOTAL_TIMES * 1.0 + 5, f"the fetch took {took:.1f} s"


def test_domains_due_in_a_round_are_fetched_in_parallel(
    server_cert: tuple[Path, Path],
    ca: CA,
    local: Broker,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Would fail if: the domains were fetched one after another, so that a peer which
    # holds its answer (here: until the other domain has been asked) delayed every other
    # domain's refresh. Each endpoint answers only once both have been asked; one after
    # the other, the first fetch runs out of its read timeout and only one is accepted.
    monkeypatch.setattr(refresher, "TIMEOUT", 1.0)
    other = "c.example"
    asked = {PEER: threading.Event(), other: threading.Event()}

    def endpoint(domain: str, peer_domain: str) -> Starlette:
        key = SigningKey.generate()
        raw = {jwk_thumbprint(bytes(key.verify_key)): bytes(key.verify_key)}
        bundle = serialize_bundle(TrustBundle(domain, 1, 2, raw))

        async def serve(_request: Request) -> Response:
            asked[domain].set()
            await asyncio.to_thread(asked[peer_domain].wait, 5)
            return Response(bundle, media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", serve)])

    with (
        Served(endpoint(PEER, other), server_cert) as first,
        Served(endpoint(other, PEER), server_cert) as second,
    ):
        _add(local, ca, first.url)
        local.federation.add(
            admin(local).claims,
            trust_domain=other,
            bundle_endpoint_url=second.url,
            ca_pem=ca.pem,
            ctx=CTX,
        )
        assert refresh_due(local) == 2
    for domain in (PEER, other):
        assert local.federation.record(domain).last_error == ""
        assert len(local.federation.trusted_keys(domain, clock.now())) == 1


def test_a_deadline_passing_between_a_redirect_and_the_next_request_is_a_fetch_error(
    server_cert: tuple[Path, Path], ca: CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: the total deadline, closing the client after a redirect's answer and
    # before the next request, let httpx's RuntimeError ("the client has been closed")
    # out of the fetch instead of a FetchError (the refresher's round would have died).
    # The deadline's timer is stood in for by a hook that closes the client on an answer.
    real_client = httpx.Client

    class ClosedOnAnAnswer(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, **options: Any) -> None:
            super().__init__(event_hooks={"response": [lambda _r: self.close()]}, **options)

    target = Document(_peer_bundle(SigningKey.generate(), sequence=1))
    with Served(target.app(), server_cert) as real:
        hop = Document(b"", 307, [("location", f"{real.url}/bundle")])
        with Served(hop.app(), server_cert) as redirecting:
            monkeypatch.setattr(httpx, "Client", ClosedOnAnAnswer)
            with pytest.raises(FetchError, match="no answer within 15 s"):
                fetch_bundle(f"{redirecting.url}/x", ca_pem=ca.pem)
    assert hop.hits == 1 and target.hits == 0
