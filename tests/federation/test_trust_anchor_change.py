"""Declaring a domain again keeps its last good bundle only when it is fetched where and
as it was: the same endpoint URL and the same trust anchor (``ca_pem``, or the system's
store).

An operator who pins a new CA for the same endpoint (the old one was found compromised,
or the system's store trusted too much) means what the old anchor let through to be no
longer trusted: a bundle fetched under it, and its ``spiffe_sequence`` as the baseline
the next bundle is held to.

Would fail if: a re-declaration with a new anchor kept the old bundle (an impostor's keys,
served under the old anchor, stayed trusted for ``max_bundle_age``), or kept its sequence
(an impostor's 2**64-1 made every genuine bundle "go backwards" and be refused).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_support import CTX, START, admin, make_broker, make_ca
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.federation import BundleRefused, UntrustedDomain
from tasklease.core.keys import jwk_thumbprint
from tasklease.rules.bundle import TrustBundle, serialize_bundle

PEER = "b.example"
URL = "https://b.example/v1/federation/bundle"


def _bundle(key: SigningKey, sequence: int) -> bytes:
    raw = bytes(key.verify_key)
    return serialize_bundle(TrustBundle(PEER, sequence, 60, {jwk_thumbprint(raw): raw}))


def _declare(broker: Broker, ca_pem: str, **fields: object) -> float:
    record, _ = broker.federation.add(
        admin(broker).claims, trust_domain=PEER, bundle_endpoint_url=URL, ca_pem=ca_pem,
        ctx=CTX, **fields,
    )  # fmt: skip
    return float(record.created_at)


def _anchors(tmp_path: Path) -> dict[str, str]:
    return {
        "system": "",
        "old": make_ca(tmp_path, "old anchor").pem,
        "new": make_ca(tmp_path, "new anchor").pem,
    }


@pytest.mark.parametrize(
    ("before", "after"), [("old", "new"), ("system", "new"), ("old", "system")]
)
def test_a_new_trust_anchor_drops_the_bundle_fetched_under_the_old_one(
    tmp_path: Path, before: str, after: str
) -> None:
    anchors = _anchors(tmp_path)
    broker = make_broker("a.example")
    clock = broker.clock
    version = _declare(broker, anchors[before])
    # Under the old anchor an impostor served its own key with the highest sequence.
    planted, genuine = SigningKey.generate(), SigningKey.generate()
    broker.federation.accept_bundle(PEER, _bundle(planted, 2**64 - 1), version=version, now=START)
    assert broker.federation.trusted_keys(PEER, START)

    clock.advance(10)  # type: ignore[attr-defined]
    version = _declare(broker, anchors[after])
    record = broker.federation.get(PEER)
    assert record.bundle == "" and record.fetched_at is None
    with pytest.raises(UntrustedDomain) as untrusted:
        broker.federation.trusted_keys(PEER, clock.now())
    assert "no bundle" in untrusted.value.reason

    # The genuine bundle, fetched under the new anchor, is no step backwards from anything.
    now = clock.now()
    broker.federation.accept_bundle(PEER, _bundle(genuine, 7), version=version, now=now)
    trusted = broker.federation.trusted_keys(PEER, now)
    assert set(trusted) == {jwk_thumbprint(bytes(genuine.verify_key))}


@pytest.mark.parametrize("anchor", ["system", "old"])
def test_the_same_endpoint_and_anchor_keep_the_last_good_bundle_and_its_sequence(
    tmp_path: Path, anchor: str
) -> None:
    ca_pem = _anchors(tmp_path)[anchor]
    broker = make_broker("a.example")
    version = _declare(broker, ca_pem)
    key = SigningKey.generate()
    broker.federation.accept_bundle(PEER, _bundle(key, 5), version=version, now=START)
    # A policy change: declared again as it was fetched, the last good bundle stays.
    version = _declare(broker, ca_pem, max_ttl=60)
    record = broker.federation.get(PEER)
    assert record.fetched_at == START and record.max_ttl == 60
    assert set(broker.federation.trusted_keys(PEER, START)) == {
        jwk_thumbprint(bytes(key.verify_key))
    }
    with pytest.raises(BundleRefused) as refused:  # its sequence is still the baseline
        broker.federation.accept_bundle(
            PEER, _bundle(SigningKey.generate(), 4), version=version, now=START
        )
    assert "lower than" in refused.value.reason
