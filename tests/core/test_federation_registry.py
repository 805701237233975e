"""Federated trust domains in the core (core.federation): records, last good bundles,
the keys they trust, and failing closed."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Conflict, InvalidRequest, NotFound, Unauthorized
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
    made: Broker = make_broker(clock=clock, trust_domain="a.example")
    return made


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


def test_refresh_schedule_follows_the_hint_and_retries_sooner_after_a_failure(
    broker: Broker, kit: Any
) -> None:
    record, _ = _add(broker, kit, max_bundle_age=3600)
    federation = broker.federation
    assert federation.next_refresh(record) == float("-inf")  # never fetched: now
    assert [r.trust_domain for r in federation.due(START)] == [PEER]
    key = SigningKey.generate()
    version = record.created_at
    fetched = federation.accept_bundle(PEER, _bundle(key, hint=120), version=version, now=START)
    assert federation.next_refresh(fetched) == START + 120  # the bundle's hint
    assert federation.due(START + 119) == []
    assert len(federation.due(START + 120)) == 1
    federation.fetch_failed(PEER, "connection refused", version=version, now=START + 120)
    failing = federation.record(PEER)
    assert failing.last_error == "connection refused" and failing.fetched_at == START
    assert federation.next_refresh(failing) == START + 132  # a tenth of the interval
    # No hint: five minutes; a hint beyond half the maximum age is cut to it; at least 1 s.
    federation.accept_bundle(PEER, _bundle(key, hint=None), version=version, now=START + 200)
    assert federation.next_refresh(federation.record(PEER)) == START + 500
    federation.accept_bundle(PEER, _bundle(key, hint=86400), version=version, now=START + 300)
    assert federation.next_refresh(federation.record(PEER)) == START + 300 + 1800
    federation.accept_bundle(PEER, _bundle(key, hint=0), version=version, now=START + 400)
    assert federation.next_refresh(federation.record(PEER)) == START + 401
    # The bundle-age gauge follows every record, and forgets a removed one.
    federation.due(START + 410)
    metrics = broker.metrics.render().decode()
    series = '{tenant="default",trust_domain="b.example"}'
    assert f"tasklease_federation_bundle_age_seconds{series} 10.0" in metrics
    assert f"tasklease_federation_refresh_failures_total{series} 1.0" in metrics
    federation.remove(kit.admin(broker).claims, PEER, kit.ctx)
    federation.due(START + 420)
    assert "tasklease_federation_bundle_age_seconds{" not in broker.metrics.render().decode()


def test_static_bundles_are_never_due(broker: Broker, kit: Any) -> None:
    record, _ = _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    assert broker.federation.next_refresh(record) == float("inf")
    assert broker.federation.due(START + 10**6) == []


def test_declaring_another_endpoint_drops_the_last_good_bundle(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    # What the old endpoint served is no word of the new one's: nothing is trusted until
    # the new endpoint's first bundle (the same endpoint keeps it, see above).
    record, _ = _add(broker, kit)
    broker.federation.accept_bundle(
        PEER, _bundle(SigningKey.generate()), version=record.created_at, now=START
    )
    assert broker.federation.trusted_keys(PEER, START)
    clock.advance(1)
    moved, replaced = _add(broker, kit, bundle_endpoint_url="https://b2.example/bundle")
    assert replaced and moved.bundle == "" and moved.fetched_at is None
    with pytest.raises(UntrustedDomain) as caught:
        broker.federation.trusted_keys(PEER, START + 1)
    assert "no bundle" in caught.value.reason


def test_new_keys_under_the_same_sequence_are_audited(broker: Broker, kit: Any) -> None:
    record, _ = _add(broker, kit)
    version = record.created_at
    first, second = SigningKey.generate(), SigningKey.generate()
    broker.federation.accept_bundle(PEER, _bundle(first, sequence=4), version=version, now=START)
    broker.federation.accept_bundle(PEER, _bundle(second, sequence=4), version=version, now=START)
    updated = _events(broker, "federation_bundle_updated")
    assert len(updated) == 2
    assert jwk_thumbprint(bytes(second.verify_key)) in updated[-1].detail


def test_a_fetch_never_replaces_a_static_bundle(broker: Broker, kit: Any) -> None:
    static = SigningKey.generate()
    record, _ = _add(broker, kit, bundle=_bundle(static, sequence=1).decode())
    with pytest.raises(NotFound):
        broker.federation.accept_bundle(
            PEER, _bundle(SigningKey.generate(), sequence=9), version=record.created_at, now=START
        )
    assert list(broker.federation.trusted_keys(PEER, START)) == [
        jwk_thumbprint(bytes(static.verify_key))
    ]


def test_a_failed_fetch_for_a_replaced_record_writes_nothing(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    old, _ = _add(broker, kit)
    clock.advance(1)
    _add(broker, kit, bundle_endpoint_url="https://b2.example/bundle")
    broker.federation.fetch_failed(PEER, "connection refused", version=old.created_at, now=START)
    current = broker.federation.record(PEER)
    assert current.last_error == "" and current.checked_at is None
    assert broker.federation.next_refresh(current) == float("-inf")  # due now, not later
    assert _events(broker, "federation_bundle_refused") == []


def test_max_ttl_is_bounded_by_the_brokers_own(broker: Broker, kit: Any) -> None:
    ceiling = broker.config.max_ttl
    assert _add(broker, kit, max_ttl=ceiling)[0].max_ttl == ceiling
    with pytest.raises(InvalidRequest) as caught:
        _add(broker, kit, max_ttl=ceiling + 1)
    assert "max_ttl" in caught.value.detail


def test_a_feed_needs_its_credentials_file_and_a_file_its_feed(broker: Broker, kit: Any) -> None:
    for fields in (
        {"revocation_feed": "https://b.example:8443"},
        {"feed_credentials_file": "b.json"},
    ):
        with pytest.raises(InvalidRequest) as caught:
            _add(broker, kit, **fields)
        assert "together" in caught.value.detail
    assert broker.federation.list_federations() == []


def test_a_removal_writes_a_chain_revocation_that_holds_off_a_new_declaration(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    broker.federation.remove(kit.admin(broker).claims, PEER, kit.ctx)
    [entry] = broker.store.find_revocations([("chain", f"fed:{PEER}")])
    assert entry.expires_at > clock.now()
    with pytest.raises(Conflict) as caught:
        _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    assert "its removal stands until" in caught.value.detail
    assert broker.federation.list_federations() == []
    [refused] = _events(broker, "federation_refused")
    assert caught.value.denial_id in refused.detail
    # Once the entry has expired, the domain may be declared again.
    clock.advance(entry.expires_at - clock.now())
    _, replaced = _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    assert not replaced and broker.federation.trusted_keys(PEER, clock.now())


def test_a_declaration_that_lost_a_race_with_the_removal_is_refused(
    broker: Broker, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The domain removed (another replica, another request) after a declaration was
    checked and before it is written: the declaration finds the removal in its own write
    and is refused as one made after it is, with its ``denial_id``."""
    admin = kit.admin(broker).claims
    _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    kernel = broker.federation._kernel
    commit = kernel.commit
    raced: list[bool] = []

    def removed_first(unit: Any) -> Any:
        if not raced:
            raced.append(True)
            broker.federation.remove(admin, PEER, kit.ctx)
        return commit(unit)

    monkeypatch.setattr(kernel, "commit", removed_first)
    with pytest.raises(Conflict) as caught:
        _add(broker, kit, bundle=_bundle(SigningKey.generate()).decode())
    monkeypatch.undo()
    assert raced and "its removal stands until" in caught.value.detail
    assert broker.federation.list_federations() == []
    [refused] = _events(broker, "federation_refused")
    assert refused.outcome == "denied" and f"by={admin.sub}" in refused.detail
    assert refused.detail.endswith(f"denial={caught.value.denial_id}")
    assert not _events(broker, "federation_added")[1:]


def _ca_pem() -> str:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer CA")])
    now = datetime.datetime.fromtimestamp(START, datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_ca_pem_is_kept_only_for_a_server_the_broker_connects_to(broker: Broker, kit: Any) -> None:
    pem, static = _ca_pem(), _bundle(SigningKey.generate()).decode()
    # A static bundle with no feed: no server is ever checked with it, so it is refused.
    with pytest.raises(InvalidRequest, match="ca_pem is for a bundle endpoint"):
        _add(broker, kit, bundle=static, ca_pem=pem)
    assert broker.federation.list_federations() == []
    # A static bundle with a revocation feed: the feed's server is checked with it.
    feed = {"revocation_feed": "https://b.example:8443", "feed_credentials_file": "b.json"}
    record, _ = _add(broker, kit, bundle=static, ca_pem=pem, **feed)
    assert record.ca_pem == pem and record.revocation_feed == "https://b.example:8443"
    # A bundle endpoint: its server is checked with it.
    record, _ = _add(broker, kit, trust_domain="c.example", ca_pem=pem)
    assert record.ca_pem == pem
