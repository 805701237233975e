"""This broker's own trust bundle (core.trustbundle): the JWKS's keys as a SPIFFE bundle
whose spiffe_sequence grows on every key change and never goes back, across restarts and
replicas sharing the store, and past a store that went back (the time in milliseconds is
its floor: decisions 144, 154). The brokers here run on a manual clock at CLOCK, so a
bundle's sequence is START (that time in milliseconds), then one more on each change
within that millisecond."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing, load_or_create_keyring, retire_keys
from tasklease.core.records import PublishedBundle
from tasklease.core.trustbundle import next_sequence
from tasklease.keystore import PlaintextKeyProvider
from tasklease.rules.bundle import parse_bundle
from tasklease.storage import MemoryStore

CLOCK = 1_800_000_000  # the manual clock of make_broker (tests/core/conftest.py)
START = CLOCK * 1000  # its time in milliseconds: the first bundle's sequence


def _served(broker: Broker) -> Any:
    return parse_bundle(broker.trust_bundle(), broker.config.trust_domain)


def test_bundle_holds_the_jwks_keys_with_sequence_and_hint(make_broker: Any) -> None:
    broker = make_broker(trust_domain="a.example", federation_refresh_hint=7)
    bundle = _served(broker)
    assert bundle.sequence == START and bundle.refresh_hint == 7
    jwks = {k["kid"]: k["x"] for k in broker.keyring.jwks()["keys"]}
    assert list(bundle.keys) == list(jwks) == broker.keyring.kids()
    document = json.loads(broker.trust_bundle())
    assert [k["use"] for k in document["keys"]] == ["jwt-svid"]
    assert broker.trust_bundle() is broker.trust_bundle()  # served from a cache


def test_sequence_grows_on_rotation_and_survives_a_restart(make_broker: Any, kit: Any) -> None:
    store = MemoryStore()
    broker = make_broker(store=store)
    assert _served(broker).sequence == START
    assert not broker.publish_trust_bundle()  # nothing changed: no store access
    broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    bundle = _served(broker)
    assert bundle.sequence == START + 1 and list(bundle.keys) == broker.keyring.kids()
    assert len(bundle.keys) == 2
    # A restart with the same keys (a new Broker on the same store): the same sequence.
    again = make_broker(store=store, keyring=broker.keyring)
    assert again.publish_trust_bundle()  # it looked...
    assert _served(again).sequence == START + 1  # ...and found the key set published
    # Keys retired while no broker ran: the next start publishes the next sequence.
    retired = KeyRing(SigningKey.generate())
    later = make_broker(store=store, keyring=retired)
    later.publish_trust_bundle()
    bundle = _served(later)
    assert bundle.sequence == START + 2 and list(bundle.keys) == retired.kids()


def test_a_replica_behind_serves_the_stored_bundle_rather_than_its_own(
    make_broker: Any, kit: Any
) -> None:
    store = MemoryStore()
    ring = KeyRing.generate()
    clock = ManualClock(1_800_000_000.0)
    first = make_broker(store=store, keyring=ring, clock=clock)
    second = make_broker(store=store, keyring=ring, clock=clock)
    first.publish_trust_bundle()
    second.publish_trust_bundle()
    assert _served(second).sequence == START
    first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    # The second reads the stored bundle again after a second at most...
    assert _served(second).sequence == START
    clock.advance(1)
    # ...and though it has not reloaded its keys yet, serves what the first published.
    assert second.keyring.kids() != first.keyring.kids()
    assert _served(second) == _served(first)
    assert _served(second).sequence == START + 1


def _after_a_rotation_elsewhere(make_broker: Any, kit: Any, keys: Path) -> tuple[Any, Any]:
    """Two processes sharing a key directory and a store: the first rotated and published
    its new key set; the second loaded its keys before, and no refresh has run since."""
    store = MemoryStore()
    ring = load_or_create_keyring(keys, PlaintextKeyProvider())
    first = make_broker(store=store, keyring=ring, key_dir=str(keys))
    second = make_broker(store=store, keyring=ring, key_dir=str(keys))
    first.publish_trust_bundle()
    first.rotate_signing_key(kit.admin(first).claims, kit.ctx)
    assert len(second.keyring.kids()) == 1 and len(first.keyring.kids()) == 2
    return first, second


def test_a_process_whose_ring_lags_never_publishes_an_older_key_set(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    # The second publishes for the first time after the first's rotation was published
    # (its first key refresh and its first publication racing): it must not publish its
    # one key over the stored two as the next sequence.
    keys = tmp_path / "keys"
    first, second = _after_a_rotation_elsewhere(make_broker, kit, keys)
    second.publish_trust_bundle()
    bundle = _served(second)
    assert bundle.sequence == START + 1 and list(bundle.keys) == first.keyring.kids()
    assert second.keyring.kids() == first.keyring.kids()  # it took the directory's keys
    assert not second.publish_trust_bundle()  # and counts that set as published
    # Keys retired while it ran are still published, as the next sequence.
    retire_keys(keys, {first.keyring.active_kid}, PlaintextKeyProvider())
    assert second.refresh_keys() and second.publish_trust_bundle()
    bundle = _served(second)
    assert bundle.sequence == START + 2 and list(bundle.keys) == [first.keyring.active_kid]


def test_keys_that_cannot_be_reloaded_publish_nothing_rather_than_an_older_set(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    first, second = _after_a_rotation_elsewhere(make_broker, kit, keys)
    newest = max(keys.glob("signing-*.pem"))
    newest.write_text("not a key")  # the second cannot read the key it lacks
    newest.chmod(0o600)
    with pytest.raises(Unavailable, match="cannot reload the signing keys"):
        second.publish_trust_bundle()
    assert _served(first).sequence == START + 1  # nothing written over the first's rotation


# Would fail if: the sequence were the stored one plus one alone: a store that went back
# (a restore) numbered the next bundle below what federated peers already held.
def test_a_store_that_went_back_still_numbers_the_next_bundle_past_every_earlier_one(
    make_broker: Any, kit: Any
) -> None:
    store = MemoryStore()
    clock = ManualClock(float(CLOCK))
    broker = make_broker(store=store, clock=clock)
    broker.publish_trust_bundle()
    first = store.get_published_bundle()
    assert first is not None
    broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    peers_saw = _served(broker).sequence
    assert peers_saw == first.sequence + 2
    # The store goes back to its first bundle (a restore of a backup taken then).

    def unit(tx: Any) -> list[Any]:
        tx.put_published_bundle(first)
        return []

    broker.kernel.commit(unit)
    clock.advance(60)  # the restore took a minute
    after = make_broker(store=store, clock=clock, keyring=broker.keyring)
    after.publish_trust_bundle()
    assert _served(after).sequence > peers_saw


def test_the_next_sequence_is_past_the_stored_one_and_never_below_the_time() -> None:
    def stored(sequence: int) -> PublishedBundle:
        return PublishedBundle(sequence, "kid", "{}", 0.0)

    ms = START
    assert next_sequence(None, 1_800_000_000.9996) == ms + 999
    assert next_sequence(stored(7), 1_800_000_000.0) == ms  # a restored store
    assert next_sequence(stored(ms + 5), 1_800_000_000.0) == ms + 6  # a burst
    assert next_sequence(stored(ms), 1_700_000_000.0) == ms + 1  # clock back
    # A bundle numbered in seconds, as before: the next is far past it.
    assert next_sequence(stored(1_800_000_000), 1_800_000_000.0) == ms
    # What a peer saw a tenth of a second before a restore is passed at once.
    assert next_sequence(stored(7), 1_800_000_000.25) >= ms + 249
    assert next_sequence(None, 0.0) == 1


class _UnwritableStore(MemoryStore):
    """A memory store that can still be read but no longer written while ``failing``
    (a full disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def write(self) -> Any:
        if self.failing:
            raise OSError("disk full")
        return super().write()


# Would fail if: the bundle endpoint served the stored bundle whatever this process's keys
# had become: while the store could not be written, a key removed from the key directory
# (after a compromise) stayed in the bundle, each fetch renewing it at federated peers.
def test_a_removed_key_is_never_served_in_the_bundle_when_it_cannot_be_published(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    store = _UnwritableStore()
    ring = load_or_create_keyring(keys, PlaintextKeyProvider())
    broker = make_broker(store=store, keyring=ring, key_dir=str(keys))
    broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    compromised = broker.keyring.kids()[1]
    assert compromised in _served(broker).keys
    store.failing = True
    retire_keys(keys, {broker.keyring.active_kid}, PlaintextKeyProvider())
    assert broker.refresh_keys()
    assert broker.keyring.kids() == [broker.keyring.active_kid]
    with pytest.raises(Unavailable):
        broker.publish_trust_bundle()
    try:
        served = _served(broker)
    except Unavailable:
        pass  # nothing vouched for: peers keep their last good bundle, to its max age
    else:
        assert compromised not in served.keys
    store.failing = False  # the next round of the publishing job publishes the new set
    assert broker.publish_trust_bundle()
    assert list(_served(broker).keys) == [broker.keyring.active_kid]
