"""The federation metrics of one tenant are not another's (docs/metrics.md, docs/tenants.md).

Every tenant's broker writes into the process's one metrics registry. The series of a
federated domain (bundle age, refresh failures, its revocation feed being current and when
it was last heard) were labelled with the trust domain alone, and a tenant's admins choose
the trust domains their tenant federates with. So a tenant federating with the domain
another tenant (or the default tenant) follows wrote into that tenant's series: its fresh
bundle's age and its live feed's 1 over the other's failing ones, hiding the alert the
platform's operator relies on while revocations made in that domain do not reach the
other tenant (docs/federation.md: "Alert on tasklease_federation_feed_up"); and removing
its own federation removed the other's bundle-age series.
"""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.keys import jwk_thumbprint
from tasklease.federation.revocations import FeedSource, _Follower
from tasklease.rules.bundle import TrustBundle, serialize_bundle
from tasklease.tenancy import Tenancy

START = 1_800_000_000.0
PEER = "b.example"


def _bundle() -> bytes:
    key = SigningKey.generate()
    raw = {jwk_thumbprint(bytes(key.verify_key)): bytes(key.verify_key)}
    return serialize_bundle(TrustBundle(PEER, 1, 5, raw))


def _federate(broker: Broker, kit: Any) -> float:
    record, _ = broker.federation.add(
        kit.admin(broker).claims,
        trust_domain=PEER,
        bundle_endpoint_url="https://b.example:8443/v1/federation/bundle",
        max_bundle_age=3600,
        ctx=kit.ctx,
    )
    return float(record.created_at)


def _value(broker: Broker, name: str, tenant: str) -> float | None:
    value = broker.metrics.registry.get_sample_value(name, {"tenant": tenant, "trust_domain": PEER})
    return None if value is None else float(value)


def test_a_tenant_federating_anothers_domain_writes_series_of_its_own(
    broker: Broker, kit: Any
) -> None:
    tenancy = Tenancy(broker)
    try:
        tenancy.create(kit.admin(broker).claims, name="acme", trust_domain=None, ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        ours, theirs = _federate(broker, kit), _federate(acme, kit)
        # The default tenant's bundle is old and its refreshes fail; acme's is fresh.
        broker.federation.accept_bundle(PEER, _bundle(), version=ours, now=START)
        broker.federation.fetch_failed(PEER, "connection refused", version=ours, now=START + 60)
        acme.federation.accept_bundle(PEER, _bundle(), version=theirs, now=START + 3000)
        broker.federation.due(START + 3000)
        acme.federation.due(START + 3000)
        age = "tasklease_federation_bundle_age_seconds"
        failures = "tasklease_federation_refresh_failures_total"
        assert _value(broker, age, "default") == 3000.0, "acme's fresh bundle hid ours"
        assert _value(broker, age, "acme") == 0.0
        assert _value(broker, failures, "default") == 1.0
        assert _value(broker, failures, "acme") is None

        # The default tenant's feed is down; acme's (a feed its admins chose) is current.
        source = FeedSource(PEER, "https://b.example:8443", "", "feed.json")
        down, up = _Follower(broker, source), _Follower(acme, source)
        down._gauge.set(0)
        up._gauge.set(1)
        up._heard.set(START)
        feed_up = "tasklease_federation_feed_up"
        assert _value(broker, feed_up, "default") == 0.0, "acme's live feed hid ours being down"
        assert _value(broker, feed_up, "acme") == 1.0
        heard = "tasklease_federation_feed_last_heard_timestamp_seconds"
        assert _value(broker, heard, "default") == 0.0  # never heard
        assert _value(broker, heard, "acme") == START

        # acme's admins remove their federation: the default tenant's series stays.
        acme.federation.remove(kit.admin(acme).claims, PEER, kit.ctx)
        acme.federation.due(START + 3010)
        assert _value(broker, age, "default") == 3000.0
        assert _value(broker, age, "acme") is None
    finally:
        tenancy.close()


def test_a_removed_tenants_federation_series_end_with_it(broker: Broker, kit: Any) -> None:
    """A tenant removed is served no more: nothing would refresh or end its domains'
    series, which stayed at their last values until a restart."""
    tenancy = Tenancy(broker)
    try:
        tenancy.create(kit.admin(broker).claims, name="acme", trust_domain=None, ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        version = _federate(acme, kit)
        acme.federation.accept_bundle(PEER, _bundle(), version=version, now=START)
        acme.federation.due(START + 60)
        acme.federation.fetch_failed(PEER, "connection refused", version=version, now=START + 60)
        age = "tasklease_federation_bundle_age_seconds"
        failures = "tasklease_federation_refresh_failures_total"
        assert _value(broker, age, "acme") == 60.0
        assert _value(broker, failures, "acme") == 1.0
        tenancy.remove(kit.admin(broker).claims, "acme", kit.ctx)
        assert _value(broker, age, "acme") is None
        assert _value(broker, failures, "acme") is None
    finally:
        tenancy.close()
