"""A tenant's broker made on first use misses no revocation committed before it
subscribed to the store's shared watch (subscribe, then read, then follow)."""

from __future__ import annotations

import time

import nacl.signing
import pytest

from tasklease.core import freshness
from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.store import RevocationRecord
from tasklease.storage.postgres import PostgresStore


def _revoke(store: PostgresStore, target: str) -> None:
    with store.write() as tx:
        tx.audit_head()
        tx.insert_revocation(RevocationRecord("token", target, 1, time.time() + 600))


def _wait_for(broker: Broker, target: str) -> None:
    deadline = time.monotonic() + 5
    while target not in broker.revocations._levels["token"]:
        assert time.monotonic() < deadline, f"{target} not propagated"
        time.sleep(0.005)


def test_a_revocation_notified_before_a_tenant_subscribes_is_read_as_it_subscribes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: a tenant broker built while the store's watch already ran (another
    # tenant's) read its revocations when built and subscribed afterwards, so that a
    # notification fanned out in between reached it only at the next check-in.
    monkeypatch.setattr(freshness, "WATCH_INTERVAL", 60.0)  # no check-in during the test
    store, other = PostgresStore(pg_url), PostgresStore(pg_url)
    config = Config(revocation_staleness_bound=120.0)
    key = KeyRing(nacl.signing.SigningKey.generate())
    first = Broker(config, store.for_tenant("acme"), key)
    stops = [first.watch_revocations()]
    late: Broker | None = None
    try:
        _revoke(other.for_tenant("acme"), "jti-acme-0")
        _wait_for(first, "jti-acme-0")  # the shared watch is listening
        late = Broker(config, store.for_tenant("globex"), key)  # its index read now
        _revoke(other.for_tenant("globex"), "jti-globex")
        _revoke(other.for_tenant("acme"), "jti-acme-1")
        _wait_for(first, "jti-acme-1")  # globex's notification was handed out before it
        stops.append(late.watch_revocations())
        assert "jti-globex" in late.revocations._levels["token"]
    finally:
        for stop in stops:
            if stop is not None:
                stop()
        first.audit.close()
        if late is not None:
            late.audit.close()
        store.close()
        other.close()
