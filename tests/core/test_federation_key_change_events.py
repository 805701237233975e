"""A federated peer's key served anew under a kid it had before shows in the audit log.

``federation_bundle_updated`` (and a static bundle's ``federation_added``) name each key
by its RFC 7638 thumbprint, after its kid when the kid is not that thumbprint: a bundle
whose kids stayed while a key changed is logged as the change it is.
"""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.keys import jwk_thumbprint
from tasklease.core.store import AuditQuery
from tasklease.rules.bundle import TrustBundle, serialize_bundle

START = 1_800_000_000.0
PEER = "b.example"


def _bundle(kid: str, key: SigningKey, sequence: int) -> bytes:
    return serialize_bundle(TrustBundle(PEER, sequence, 5, {kid: bytes(key.verify_key)}))


def _details(broker: Broker, event_type: str) -> list[str]:
    events, _ = broker.audit_events(AuditQuery(event_type=event_type))
    return [event.detail for event in events]


def test_a_key_replaced_under_its_kid_is_named_by_thumbprint(make_broker: Any, kit: Any) -> None:
    broker: Broker = make_broker(clock=ManualClock(START), trust_domain="a.example")
    record, _ = broker.federation.add(
        kit.admin(broker).claims,
        ctx=kit.ctx,
        trust_domain=PEER,
        bundle_endpoint_url="https://b.example:8443/v1/federation/bundle",
    )
    first, second = SigningKey.generate(), SigningKey.generate()
    version = record.created_at
    broker.federation.accept_bundle(PEER, _bundle("k1", first, 4), version=version, now=START)
    broker.federation.accept_bundle(PEER, _bundle("k1", second, 4), version=version, now=START)
    before, after = _details(broker, "federation_bundle_updated")
    assert f"k1:{jwk_thumbprint(bytes(first.verify_key))}" in before
    assert f"k1:{jwk_thumbprint(bytes(second.verify_key))}" in after
    assert jwk_thumbprint(bytes(first.verify_key)) not in after


def test_a_static_bundle_names_its_keys_by_thumbprint(make_broker: Any, kit: Any) -> None:
    broker: Broker = make_broker(clock=ManualClock(START), trust_domain="a.example")
    key = SigningKey.generate()
    jkt = jwk_thumbprint(bytes(key.verify_key))
    broker.federation.add(
        kit.admin(broker).claims,
        ctx=kit.ctx,
        trust_domain=PEER,
        bundle=serialize_bundle(TrustBundle(PEER, 1, 5, {jkt: bytes(key.verify_key)})).decode(),
    )
    [detail] = _details(broker, "federation_added")
    assert f"keys=[{jkt}]" in detail  # a kid that is its thumbprint is written once
