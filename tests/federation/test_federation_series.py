"""A federated domain's series end with the domain (or its feed): a tenant's admins who
declare, fail and remove domains in a loop leave no series behind, and no alert fires for
a domain no longer followed (docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundle_support import CTX, admin, make_broker

from tasklease.federation.revocations import FeedFollowers


def _series(broker: Any, domain: str) -> list[str]:
    text = broker.metrics.render().decode()
    return [
        line
        for line in text.splitlines()
        if not line.startswith("#") and f'trust_domain="{domain}"' in line
    ]


def _declare(broker: Any, domain: str, *, feed: bool) -> None:
    extra: dict[str, Any] = (
        {"revocation_feed": "https://127.0.0.1:1", "feed_credentials_file": "peer.json"}
        if feed
        else {}
    )
    broker.federation.add(
        admin(broker).claims,
        trust_domain=domain,
        bundle_endpoint_url=f"https://{domain}/v1/federation/bundle",
        ctx=CTX,
        **extra,
    )


def test_a_removed_domains_series_end_with_it() -> None:
    broker = make_broker("local.example")
    federation, now = broker.federation, broker.clock.now()
    for n in range(3):
        domain = f"d{n}.example"
        _declare(broker, domain, feed=False)
        (record,) = [r for r in federation.due(now) if r.trust_domain == domain]
        federation.fetch_failed(domain, "fetch failed: refused", version=record.created_at, now=now)
        assert _series(broker, domain), "a failing domain is counted"
        federation.remove(admin(broker).claims, domain, CTX)
        federation.due(now)
        assert _series(broker, domain) == []


def test_a_failure_reported_for_a_domain_already_removed_makes_no_series() -> None:
    broker = make_broker("local.example")
    federation, now = broker.federation, broker.clock.now()
    _declare(broker, "gone.example", feed=False)
    (record,) = federation.due(now)
    federation.remove(admin(broker).claims, "gone.example", CTX)
    federation.due(now)
    federation.fetch_failed("gone.example", "fetch failed", version=record.created_at, now=now)
    assert _series(broker, "gone.example") == []


def test_a_feed_no_longer_declared_leaves_no_series_down(tmp_path: Path) -> None:
    followers = FeedFollowers()
    broker = make_broker("one.example", data_dir=str(tmp_path))
    try:
        _declare(broker, "a.example", feed=True)
        assert followers.tick(broker) == 1
        assert any("tasklease_federation_feed_up" in s for s in _series(broker, "a.example"))
        _declare(broker, "a.example", feed=False)  # the feed is no longer declared
        assert followers.tick(broker) == 0
        followers.close()
        assert not any("feed" in s for s in _series(broker, "a.example"))
    finally:
        followers.close()
