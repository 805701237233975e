"""Federated trust domains in the core (core.federation): records, last good bundles,
the keys they trust, and failing closed."""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.errors import InvalidRequest, NotFound, Unauthorized
from tasklease.core.federation import BundleRefused, UntrustedDomain
from tasklease.core.keys import jwk_thumbprint
from tasklease.core.store import AuditQuery
from tasklease.rules.bundle import TrustBundle, serialize_bundle

START = 1_800_000_000.0
PEER = "b.example"


def _bundle(*keys: SigningKey, sequence: int | None = 1, hint: int | None = 5) -> bytes:
    raw = {jwk_thumbprint(bytes(k.verify_key)): bytes(k.verify_key) for k in keys}
    return serialize_bundle(TrustBundle(PEER, sequence, hint, raw))


def _events(broker: Broker, event_type: str) -> list[Any]:
    events, _ = broker.audit_events(AuditQuery(event_type=event_type))
    return events


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def broker(make_broker: Any, clock: ManualClock) -> Broker:
    return make_broker(clock=clock, trust_domain="a.example")


def _add(broker: Broker, kit: Any, **fields: Any) -> Any:
    fields.setdefault("trust_domain", PEER)
    if "bundle" not in fields:
        fields.setdefault("bundle_endpoint_url", "https://b.example:8443/v1/federation/bundle")
    return broker.federation.add(kit.admin(broker).claims, ctx=kit.ctx, **fields)


def test_endpoint_record_trusts_nothing_until_its_first_bundle(broker: Broker, kit: Any) -> None:
    record, replaced = _add(
        broker,
        kit,
        scope_map=[["read:data:*", "read:partner:*"]],
        scope_ceiling=["read:partner:*"],
        max_ttl=600,
        max_bundle_age=120,
    )
    assert not replaced and record.bundle == "" and record.fetched_at is None
    assert record.scope_map == (("read:data:*", "read:partner:*"),)
    assert record.scope_ceiling == ("read:partner:*",) and record.max_ttl == 600
    assert broker.federation.record(PEER) == record
    with pytest.raises(UntrustedDomain) as caught:
        broker.federation.trusted_keys(PEER, START)
    assert "no bundle" in caught.value.reason
    assert caught.value.detail == "invalid token" and isinstance(caught.value, Unauthorized)
    [event] = _events(broker, "federation_added")
    assert "trust_domain=b.example" in event.detail and "max_bundle_age=120" in event.detail


def test_accepted_bundle_is_trusted_until_max_age_then_fails_closed(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    record, _ = _add(broker, kit, max_bundle_age=120)
    key = SigningKey.generate()
    broker.federation.accept_bundle(PEER, _bundle(key), version=record.created_at, now=START)
    kid = jwk_thumbprint(bytes(key.verify_key))
    assert dict(broker.federation.trusted_keys(PEER, START + 120)) == {kid: bytes(key.verify_key)}
    with pytest.raises(UntrustedDomain) as caught:
        broker.federation.trusted_keys(PEER, START + 121)
    assert "beyond its max_bundle_age" in caught.value.reason
    # A fresh copy of the same bundle restarts its age; no audit event for that.
    broker.federation.accept_bundle(PEER, _bundle(key), version=record.created_at, now=START + 200)
    assert broker.federation.trusted_keys(PEER, START + 300)
    assert len(_events(broker, "federation_bundle_updated")) == 1


def test_sequence_going_backwards_is_refused_and_the_last_good_kept(
    broker: Broker, kit: Any
) -> None:
    record, _ = _add(broker, kit)
    old, new, forged = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    version = record.created_at
    broker.federation.accept_bundle(PEER, _bundle(old, sequence=1), version=version, now=START)
    broker.federation.accept_bundle(PEER, _bundle(new, sequence=2), version=version, now=START)
    for document in (_bundle(forged, sequence=1), _bundle(forged, sequence=None)):
        with pytest.raises(BundleRefused):
            broker.federation.accept_bundle(PEER, document, version=version, now=START + 1)
    with pytest.raises(BundleRefused):
        broker.federation.accept_bundle(PEER, b'{"keys": 1}', version=version, now=START + 1)
    kept = broker.federation.record(PEER)
    assert list(broker.federation.trusted_keys(PEER, START + 1)) == [
        jwk_thumbprint(bytes(new.verify_key))
    ]
    assert kept.fetched_at == START and "bundle refused" in kept.last_error
    # Two different refusals in a row: two events; the sequence one repeated is not.
    refused = _events(broker, "federation_bundle_refused")
    assert [e.outcome for e in refused] == ["denied"] * 3
    with pytest.raises(BundleRefused):
        broker.federation.accept_bundle(PEER, b'{"keys": 1}', version=version, now=START + 2)
    assert len(_events(broker, "federation_bundle_refused")) == 3
    # A good fetch clears the error.
    broker.federation.accept_bundle(PEER, _bundle(new, sequence=3), version=version, now=START + 3)
    assert broker.federation.record(PEER).last_error == ""


def test_a_refresh_for_a_replaced_record_writes_nothing(broker: Broker, kit: Any) -> None:
    record, _ = _add(broker, kit)
    _add(broker, kit, bundle_endpoint_url="https://b2.example/bundle")
    with pytest.raises(NotFound):
        broker.federation.accept_bundle(
            PEER, _bundle(SigningKey.generate()), version=record.created_at - 1, now=START
        )
    assert broker.federation.record(PEER).bundle == ""


def test_static_bundle_is_trusted_at_once_and_does_not_age(broker: Broker, kit: Any) -> None:
    key = SigningKey.generate()
    record, _ = _add(broker, kit, bundle=_bundle(key).decode(), max_bundle_age=60)
    assert record.static and record.fetched_at == START
    assert list(broker.federation.trusted_keys(PEER, START + 86400)) == [
        jwk_thumbprint(bytes(key.verify_key))
    ]
    # Added again with a new file: replaced, the new keys trusted.
    other = SigningKey.generate()
    _, replaced = _add(broker, kit, bundle=_bundle(other, sequence=2).decode())
    assert replaced
    assert list(broker.federation.trusted_keys(PEER, START)) == [
        jwk_thumbprint(bytes(other.verify_key))
    ]


def test_remove_stops_trust_and_is_audited(broker: Broker, kit: Any) -> None:
    _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    broker.federation.remove(kit.admin(broker).claims, PEER, kit.ctx)
    with pytest.raises(UntrustedDomain):
        broker.federation.trusted_keys(PEER, START)
    with pytest.raises(UntrustedDomain):
        broker.federation.record(PEER)
    assert broker.federation.list_federations() == []
    with pytest.raises(NotFound) as caught:
        broker.federation.remove(kit.admin(broker).claims, PEER, kit.ctx)
    assert caught.value.denial_id
    assert len(_events(broker, "federation_removed")) == 1
    [denied] = _events(broker, "federation_denied")
    assert caught.value.denial_id in denied.detail


def test_keys_are_never_another_domains(broker: Broker, kit: Any) -> None:
    key = SigningKey.generate()
    _add(broker, kit, bundle=_bundle(key).decode())
    with pytest.raises(UntrustedDomain):
        broker.federation.trusted_keys("c.example", START)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trust_domain": "a.example"}, "own trust domain"),
        ({"trust_domain": "B.example"}, "invalid trust_domain"),
        ({"trust_domain": ""}, "missing required field"),
        ({"bundle_endpoint_url": "http://b.example/bundle"}, "https"),
        ({"bundle_endpoint_url": "https://user:pw@b.example/bundle"}, "userinfo"),
        ({"bundle_endpoint_url": "https://b.example/bundle#x"}, "fragment"),
        ({"bundle_endpoint_url": "https:///bundle"}, "https"),
        ({"bundle_endpoint_url": "https://b.example:99999/"}, "https"),
        ({"bundle": '{"keys":[]}', "bundle_endpoint_url": "https://b.example/"}, "either"),
        ({"bundle": '{"keys":[],"keys":[]}'}, "bundle refused"),
        ({"ca_pem": "not a certificate"}, "PEM"),
        ({"max_bundle_age": 0}, "max_bundle_age"),
        ({"max_bundle_age": "60"}, "max_bundle_age"),
        ({"max_ttl": 999999}, "max_ttl"),
        ({"scope_map": [["read:data:*"]]}, "pairs"),
        ({"scope_map": [["read data", "read:x:y"]]}, "foreign scope"),
        ({"scope_map": [["read:data:*", "nope"]]}, "local scope"),
        ({"scope_ceiling": ["read:*:*"]}, "scope_ceiling"),
        ({"scope_ceiling": "read:data:*"}, "scope_ceiling"),
    ],
)
def test_malformed_records_are_refused(
    broker: Broker, kit: Any, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _add(broker, kit, **fields)
    assert message in caught.value.detail
    assert broker.federation.list_federations() == []
