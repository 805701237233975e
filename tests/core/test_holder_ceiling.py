"""A holder's registration ceiling bounds what it holds (invariants 1 and 2: the holder is
an ancestor too): a token delegated to an agent never outlives the delegate's own
registration, nor does any renewal or narrowing of it."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.errors import RenewalCeilingExceeded
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.store import AuditQuery


def late_delegation(make_broker: Any, kit: Any) -> tuple[Any, Any, Any]:
    """b registers at 0 (its ceiling at 900); a registers at 600 (its ceiling at 1500, its
    token until 1200) and, at 850, delegates to b for as long as a may."""
    broker = make_broker(
        max_ttl=600, default_ttl=600, delegation_default_ttl=600, renewal_ceiling=900
    )
    lt = kit.launch(broker, single_use=False, ttl=3600)
    b = kit.register(broker, lt, task_id="task-b")
    broker.clock.advance(600)
    a = kit.register(broker, lt, task_id="task-a")
    assert a.claims.exp > b.claims.max_exp
    broker.clock.advance(250)
    held = broker.delegate(
        a.claims, delegate_to=b.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    return broker, b, held


def test_a_delegated_token_ends_with_its_holders_registration(make_broker: Any, kit: Any) -> None:
    _, b, held = late_delegation(make_broker, kit)
    assert held.claims.exp == held.claims.max_exp == b.claims.max_exp


def test_what_a_holder_renews_or_narrows_ends_with_its_registration(
    make_broker: Any, kit: Any
) -> None:
    broker, b, held = late_delegation(make_broker, kit)
    broker.clock.advance(10)
    renewed = broker.renew(held.claims, kit.ctx)
    assert renewed.claims.exp <= b.claims.max_exp
    request = ExchangeRequest(
        grant_type=GRANT_TYPE, subject_token=renewed.token, subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert broker.exchange_token(request, kit.ctx).issued.claims.exp <= b.claims.max_exp


def test_at_its_ceiling_a_holder_renews_nothing(make_broker: Any, kit: Any) -> None:
    broker, b, held = late_delegation(make_broker, kit)
    broker.clock.advance(b.claims.max_exp - int(broker.clock.now()))
    with pytest.raises(RenewalCeilingExceeded) as refused:
        broker.renew(held.claims, kit.ctx)
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert len([e for e in events if f"denial={refused.value.denial_id}" in e.detail]) == 1


def test_a_token_handed_to_an_agent_lives_no_longer_than_its_own_may(
    make_broker: Any, kit: Any
) -> None:
    """b's launch token gives each of b's tokens 60 s: what a, launched for longer, hands
    to b lives no longer, nor does its renewal."""
    broker = make_broker(max_ttl=3600, default_ttl=600, delegation_default_ttl=600)
    b = kit.register(broker, kit.launch(broker, max_ttl=60), task_id="task-b")
    a = kit.register(broker, task_id="task-a")
    assert b.claims.exp - b.claims.iat == 60 < a.claims.exp - a.claims.iat
    held = broker.delegate(a.claims, delegate_to=b.sub, scope=["read:data:*"], ttl=600, ctx=kit.ctx)
    assert held.claims.exp - held.claims.iat == 60
    broker.clock.advance(30)
    renewed = broker.renew(held.claims, kit.ctx).claims
    assert renewed.exp - renewed.iat == 60
