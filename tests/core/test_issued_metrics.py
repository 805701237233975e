"""``tasklease_tokens_issued_total`` counts each token once, by its kind, once written.

A token too large to send as a JWS is issued by reference (``tlr_``): that is its form,
not another token. It was counted a second time (``kind="by_reference"``) while it was
being signed, before its write: once more for every by-reference token issued, and once
for every one whose write was then refused (a renewal that lost to another).
"""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.errors import Unauthorized
from tasklease.core.pending import complete
from tasklease.tenancy import Tenancy


def _issued(broker: Broker) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in broker.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "tasklease_tokens_issued_total":
                counts[sample.labels["kind"]] = sample.value
    return counts


def test_a_by_reference_token_is_counted_once_under_its_kind(make_broker: Any, kit: Any) -> None:
    broker = make_broker(reference_token_threshold=512)
    agent = kit.register(broker)
    assert agent.token.startswith("tlr_")
    assert _issued(broker) == {"agent": 1.0}
    broker.renew(agent.issued.claims, kit.ctx)
    assert _issued(broker) == {"agent": 1.0, "renew": 1.0}


def test_a_renewal_refused_at_its_write_counts_no_token(make_broker: Any, kit: Any) -> None:
    broker = make_broker(reference_token_threshold=512)
    agent = kit.register(broker)
    # Two renewals of one token, checked and signed before either is written: the
    # second's write is refused (only the first renewal of a token ends it).
    first = broker.prepare_renew(agent.issued.claims, kit.ctx)
    second = broker.prepare_renew(agent.issued.claims, kit.ctx)
    complete(broker.kernel, first)
    with pytest.raises(Unauthorized):
        complete(broker.kernel, second)
    assert _issued(broker) == {"agent": 1.0, "renew": 1.0}


def test_revocation_entries_are_every_tenants(broker: Broker, kit: Any) -> None:
    """``tasklease_revocation_entries`` is what the process holds: the default tenant's
    index and every tenant's (docs/tenants.md: the process's metrics are the platform's).
    Each tenant's broker set the one gauge to its own index's size, so it read whichever
    tenant had last applied or pruned a revocation."""
    tenancy = Tenancy(broker)
    try:
        admin = kit.admin(broker).claims
        tenancy.create(admin, name="acme", trust_domain="acme.example", ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        for task in ("t1", "t2", "t3"):
            broker.revoke(admin, level="task", target=task, ctx=kit.ctx)
        acme.revoke(kit.admin(acme).claims, level="task", target="t9", ctx=kit.ctx)
        held = len(broker.kernel.revocations) + len(acme.kernel.revocations)
        assert held >= 4
        gauge = broker.metrics.registry.get_sample_value("tasklease_revocation_entries")
        assert gauge == held
    finally:
        tenancy.close()


def test_a_tenant_no_longer_served_leaves_the_revocation_entries(broker: Broker, kit: Any) -> None:
    tenancy = Tenancy(broker)
    try:
        admin = kit.admin(broker).claims
        tenancy.create(admin, name="acme", trust_domain="acme.example", ctx=kit.ctx)
        acme = tenancy.broker("acme")
        assert acme is not None
        broker.revoke(admin, level="task", target="t1", ctx=kit.ctx)
        acme.revoke(kit.admin(acme).claims, level="task", target="t9", ctx=kit.ctx)
        sample = broker.metrics.registry.get_sample_value
        assert sample("tasklease_revocation_entries") == 2
        acme.stop_serving()
        assert sample("tasklease_revocation_entries") == len(broker.kernel.revocations) == 1
    finally:
        tenancy.close()
