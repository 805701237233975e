"""Renewal: same lifetime, predecessor revoked, a count limit and a hard ceiling."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tasklease.core.errors import (
    Forbidden,
    RenewalCeilingExceeded,
    RenewalCountExceeded,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.store import AuditQuery
from tasklease.core.validation import TokenRejected


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


def test_renew_revokes_predecessor_and_keeps_lifetime(broker: Any, kit: Any, clock: Any) -> None:
    agent = kit.register(broker, kit.launch(broker, max_ttl=120))
    old = agent.claims
    clock.advance(50)
    renewed = broker.renew(old, kit.ctx)
    new = renewed.claims
    assert new.exp - new.iat == 120
    assert new.iat == int(clock.now())
    assert new.rnc == 1
    assert new.oiat == old.oiat
    assert new.jti != old.jti
    for name in ("sub", "aud", "scope", "task_id", "orch_id", "client_id", "kind"):
        assert getattr(new, name) == getattr(old, name), name
    with pytest.raises(TokenRejected, match="revoked"):
        broker.validate(agent.token)
    assert broker.validate(renewed.token).rnc == 1
    # The successor authenticates; the predecessor does not.
    assert broker.authenticate(kit.bearer(renewed.token), kit.ctx).jti == new.jti
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(agent.token), kit.ctx)


def test_each_renewal_is_audited(broker: Any, kit: Any, clock: Any) -> None:
    agent = kit.register(broker)
    claims = agent.claims
    jtis = [claims.jti]
    for _ in range(3):
        clock.advance(10)
        claims = broker.renew(claims, kit.ctx).claims
        jtis.append(claims.jti)
    renewed = events(broker, "token_renewed")
    assert len(renewed) == 3
    for i, event in enumerate(renewed):
        assert event.agent_id == agent.sub
        assert event.outcome == "success"
        assert f"old_jti={jtis[i]}" in event.detail
        assert f"new_jti={jtis[i + 1]}" in event.detail


def test_renewal_count_limit(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_renewals=2)
    claims = kit.register(broker).claims
    first = broker.renew(claims, kit.ctx)
    second = broker.renew(first.claims, kit.ctx)
    assert (first.claims.rnc, second.claims.rnc) == (1, 2)
    with pytest.raises(RenewalCountExceeded) as info:
        broker.renew(second.claims, kit.ctx)
    assert info.value.code == "renewal_count_exceeded"
    # A refusal revokes nothing: the holder keeps its current token until it expires.
    assert broker.validate(second.token).rnc == 2
    failed = events(broker, "token_renewal_failed")
    assert len(failed) == 1
    assert "renewal count limit" in failed[0].detail
    assert len(events(broker, "token_renewed")) == 2


def test_max_renewals_zero_forbids_renewal(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_renewals=0)
    with pytest.raises(RenewalCountExceeded):
        broker.renew(kit.register(broker).claims, kit.ctx)


def test_renewal_ceiling(make_broker: Any, kit: Any) -> None:
    broker = make_broker(renewal_ceiling=600)
    clock = broker.clock
    agent = kit.register(broker)  # ttl 300
    oiat = agent.claims.oiat
    clock.advance(250)
    a = broker.renew(agent.claims, kit.ctx)
    assert a.claims.exp == oiat + 550
    clock.advance(250)
    b = broker.renew(a.claims, kit.ctx)
    assert b.claims.exp == oiat + 600  # clamped at the ceiling, not oiat + 800
    assert b.claims.exp - b.claims.iat == 100
    assert broker.validate(b.token).exp == oiat + 600
    clock.advance(100)  # now == oiat + 600
    with pytest.raises(RenewalCeilingExceeded) as info:
        broker.renew(b.claims, kit.ctx)
    assert info.value.code == "renewal_ceiling_exceeded"
    assert "ceiling" in events(broker, "token_renewal_failed")[-1].detail
    # The token that hit the ceiling is dead at its exp (no leeway), and was never renewed.
    with pytest.raises(TokenRejected, match="token expired"):
        broker.validate(b.token)


def test_successor_never_passes_the_ceiling(make_broker: Any, kit: Any) -> None:
    broker = make_broker(renewal_ceiling=1000, max_renewals=100)
    clock = broker.clock
    claims = kit.register(broker, kit.launch(broker, max_ttl=300)).claims
    ceiling = claims.oiat + 1000
    refused = False
    for _ in range(40):
        clock.advance(37)
        try:
            claims = broker.renew(claims, kit.ctx).claims
        except RenewalCeilingExceeded:
            refused = True
            break
        assert claims.exp <= ceiling
        assert claims.iat < ceiling
    assert refused


def test_two_concurrent_renewals_exactly_one_wins(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    barrier = threading.Barrier(2)
    results: list[Any] = []
    lock = threading.Lock()

    def renew() -> None:
        barrier.wait()
        try:
            out: Any = broker.renew(agent.claims, kit.ctx)
        except TaskleaseError as exc:
            out = exc
        with lock:
            results.append(out)

    threads = [threading.Thread(target=renew) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    wins = [r for r in results if not isinstance(r, TaskleaseError)]
    losses = [r for r in results if isinstance(r, TaskleaseError)]
    assert len(wins) == 1
    assert len(losses) == 1
    assert isinstance(losses[0], Unauthorized)
    assert len(events(broker, "token_renewed")) == 1
    assert broker.validate(wins[0].token).rnc == 1


def test_renewing_the_same_token_twice_sequentially_is_refused(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    broker.renew(agent.claims, kit.ctx)
    with pytest.raises(Unauthorized):
        broker.renew(agent.claims, kit.ctx)
    assert len(events(broker, "token_renewed")) == 1


def test_admin_and_app_tokens_cannot_renew(broker: Any, kit: Any) -> None:
    for issued in (kit.admin(broker), kit.app(broker)):
        with pytest.raises(Forbidden) as info:
            broker.renew(issued.claims, kit.ctx)
        assert info.value.code == "forbidden"
    denied = events(broker, "renew_denied")
    assert [e.agent_id for e in denied] == ["admin", "app:app-demo-abc123"]
    assert events(broker, "token_renewed") == []


def test_renewal_keeps_delegation_chain(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker, single_use=False)
    a = kit.register(broker, launch)
    b = kit.register(broker, launch)
    delegated = broker.delegate(
        a.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    renewed = broker.renew(delegated.claims, kit.ctx)
    assert renewed.claims.delegation_chain == delegated.claims.delegation_chain
    assert renewed.claims.chain_hash == delegated.claims.chain_hash
    assert broker.validate(renewed.token).scope == ("read:data:1",)
