"""Federated trust domains and the published bundle on every backend (``store`` fixture:
memory, SQLite, PostgreSQL), each tenant's apart."""

from __future__ import annotations

import pytest

from tasklease.core.store import FederationRecord, PublishedBundle, Store


def _record(domain: str = "b.example", **fields: object) -> FederationRecord:
    values: dict[str, object] = {
        "trust_domain": domain,
        "bundle_endpoint_url": "https://b.example:8443/v1/federation/bundle",
        "ca_pem": "",
        "max_bundle_age": 3600,
        "scope_map": (("read:data:*", "read:partner:*"), ("write:x:1", "write:y:1")),
        "scope_ceiling": ("read:partner:*", "write:y:1"),
        "max_ttl": 600,
        "bundle": "",
        "fetched_at": None,
        "last_error": "",
        "created_at": 1_800_000_000.25,
        "created_by": "operator:alice",
        "checked_at": None,
    }
    values.update(fields)
    return FederationRecord(**values)  # type: ignore[arg-type]


def test_federation_put_get_list_replace_delete(store: Store) -> None:
    first, second = _record("b.example"), _record("a.example", bundle_endpoint_url="")
    with store.write() as tx:
        assert tx.get_federation("b.example") is None
        tx.put_federation(first)
        tx.put_federation(second)
    assert store.get_federation("b.example") == first
    assert store.list_federations() == [second, first]  # by name
    updated = _record(
        "b.example",
        bundle='{"keys":[]}',
        fetched_at=1_800_000_100.5,
        last_error="x",
        checked_at=1_800_000_101.5,
    )
    with store.write() as tx:
        assert tx.get_federation("b.example") == first
        tx.put_federation(updated)
    assert store.get_federation("b.example") == updated
    with store.write() as tx:
        assert tx.delete_federation("b.example")
        assert not tx.delete_federation("b.example")
    assert store.get_federation("b.example") is None
    assert store.list_federations() == [second]


def test_federation_keeps_where_its_revocations_come_from(store: Store) -> None:
    """The feed's base URL and the path of its credential file (never a secret)."""
    record = _record(
        revocation_feed="https://b.example:8443/t/acme",
        feed_credentials_file="b-feed.json",
    )
    with store.write() as tx:
        tx.put_federation(record)
    assert store.get_federation("b.example") == record
    assert store.list_federations()[0].revocation_feed == "https://b.example:8443/t/acme"


def test_federation_write_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.put_federation(_record())
        raise RuntimeError("undo")
    assert store.get_federation("b.example") is None
    with store.write() as tx:
        tx.put_federation(_record())
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.delete_federation("b.example")
        raise RuntimeError("undo")
    assert store.get_federation("b.example") == _record()


def test_published_bundle_put_and_replace(store: Store) -> None:
    assert store.get_published_bundle() is None
    first = PublishedBundle(1, "k1", '{"keys":[]}', 1_800_000_000.5)
    with store.write() as tx:
        assert tx.get_published_bundle() is None
        tx.put_published_bundle(first)
    assert store.get_published_bundle() == first
    second = PublishedBundle(2, "k1 k2", '{"keys":[],"spiffe_sequence":2}', 1_800_000_001.0)
    with store.write() as tx:
        assert tx.get_published_bundle() == first
        tx.put_published_bundle(second)
    assert store.get_published_bundle() == second


def test_tenants_have_their_own_federations_and_bundle(store: Store) -> None:
    other = store.for_tenant("acme")
    with store.write() as tx:
        tx.put_federation(_record())
        tx.put_published_bundle(PublishedBundle(5, "k", "{}", 1.0))
    assert other.get_federation("b.example") is None
    assert other.list_federations() == []
    assert other.get_published_bundle() is None
    with other.write() as tx:
        tx.put_federation(_record(max_ttl=60))
        tx.put_published_bundle(PublishedBundle(1, "j", "{}", 2.0))
        assert tx.delete_federation("b.example")
        assert not tx.delete_federation("b.example")
    assert store.get_federation("b.example") == _record()
    assert store.get_published_bundle() == PublishedBundle(5, "k", "{}", 1.0)
