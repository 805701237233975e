"""A federated domain's ``ca_pem`` is checked as it is used (``core.tlsanchor``): the
certificates its PEM blocks hold make the TLS context of the bundle fetch and of the
revocation feed, whatever else the file says.

Would fail if: a CA file with a non-ASCII comment (distributions' bundles name their CAs
in many languages) passed the declaration's check and then made ``ssl`` raise: the
declaration answered 500 without a denial_id after the record was written, and every
refresh round raised again; or a ``ca_pem`` no TLS context takes were stored, or one stored
before this check made the refresher or the feed follower raise instead of recording why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from bundle_support import CA, CTX, Served, admin, make_broker, make_ca, serve_broker

from tasklease.client.testing import BrokerForTests
from tasklease.core.clock import SystemClock
from tasklease.core.store import AuditQuery
from tasklease.federation import refresh_due
from tasklease.federation.revocations import FeedError, FeedSource, _Follower

PEER = "b.example"
COMMENT = "# Autorité de certification racine — test\n"
# Text no TLS context takes: no certificate at all, or a block that is none.
UNUSABLE = [
    "\u00e9",
    COMMENT,
    COMMENT + "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n",
]
UNUSABLE_IDS = ["no-pem", "comment-only", "no-certificate-in-block"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def local() -> Iterator[BrokerForTests]:
    with BrokerForTests(trust_domain="a.example") as running:
        yield running


@pytest.fixture(scope="module")
def peer(ca: CA) -> Iterator[Served]:
    broker = make_broker(PEER, clock=SystemClock())
    with serve_broker(broker, ca.server("127.0.0.1")) as served:
        yield served


def _declare(local: BrokerForTests, domain: str, url: str, ca_pem: str) -> httpx.Response:
    token = httpx.post(f"{local.url}/v1/admin/auth", json={"secret": local.admin_secret}).json()[
        "access_token"
    ]
    return httpx.post(
        f"{local.url}/v1/admin/federations",
        headers={"authorization": f"Bearer {token}"},
        json={"trust_domain": domain, "bundle_endpoint_url": url, "ca_pem": ca_pem},
        timeout=30,
    )


def test_a_ca_file_with_a_non_ascii_comment_is_declared_and_trusts_its_certificates(
    local: BrokerForTests, peer: Served, ca: CA
) -> None:
    answer = _declare(local, PEER, f"{peer.url}/v1/federation/bundle", COMMENT + ca.pem)
    assert answer.status_code == 201, answer.text
    # The endpoint's certificate was checked against the file's certificate: trusted.
    assert answer.json()["status"] == "trusted", answer.text


@pytest.mark.parametrize("ca_pem", UNUSABLE, ids=UNUSABLE_IDS)
def test_a_ca_pem_no_tls_context_takes_is_refused_with_a_denial_id(
    local: BrokerForTests, ca_pem: str
) -> None:
    domain = "c.example"
    answer = _declare(local, domain, "https://127.0.0.1:1/v1/federation/bundle", ca_pem)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert "ca_pem" in problem["detail"] and problem["denial_id"]
    events, _ = local.broker.store.query_audit(AuditQuery(limit=10_000))
    [refused] = [e for e in events if problem["denial_id"] in e.detail]
    assert refused.event_type == "federation_refused" and refused.outcome == "denied"
    assert local.broker.store.get_federation(domain) is None  # nothing was written


@pytest.mark.parametrize("ca_pem", UNUSABLE, ids=UNUSABLE_IDS)
def test_a_stored_ca_pem_that_cannot_be_used_is_a_recorded_fetch_failure(ca_pem: str) -> None:
    # A record written before its ca_pem was checked as used.
    broker = make_broker("a.example")
    record, _ = broker.federation.add(
        admin(broker).claims,
        trust_domain=PEER,
        bundle_endpoint_url="https://127.0.0.1:1/v1/federation/bundle",
        ctx=CTX,
    )
    with broker.store.write() as tx:
        tx.put_federation(replace(record, ca_pem=ca_pem))
    for _ in range(3):  # every round records it; none raises
        assert refresh_due(broker) == 0
        broker.clock.advance(60)  # type: ignore[attr-defined]
    stored = broker.federation.get(PEER)
    assert stored.last_error.startswith("fetch failed: the CA certificates cannot be used")
    events, _ = broker.audit_events(AuditQuery(event_type="federation_bundle_refused"))
    assert len(events) == 1  # the same failure is audited once


@pytest.mark.parametrize("ca_pem", UNUSABLE, ids=UNUSABLE_IDS)
def test_the_feed_follower_refuses_a_stored_ca_pem_that_cannot_be_used(
    tmp_path: Path, ca_pem: str
) -> None:
    broker = make_broker("a.example", data_dir=str(tmp_path))
    follower = _Follower(broker, FeedSource(PEER, "https://127.0.0.1:1", ca_pem, "peer.json"))
    # A FeedError: retried after the configuration delay, never an unhandled error.
    with pytest.raises(FeedError, match="CA certificates cannot be used"):
        follower._client()
