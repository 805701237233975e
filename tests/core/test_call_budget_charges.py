# Would fail if: a counted call were charged to another counted grant than the first of
# the token's grants that allows it, a budget outlived the lineage it counts for, or the
# count were made for a token the store says is revoked.
"""Which budget a counted call spends, how long a budget is kept, and the live read
before counting (core.calls)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.core.test_call_budget_threads import launched, registered

from tasklease.core.calls import CallCounting, budget_holder, budget_key
from tasklease.core.errors import Forbidden

CALL = {"action": "read", "location": "https://rs.example/a/x"}


def _read(location: str, calls: int) -> dict[str, Any]:
    return {
        "type": "resource_access",
        "actions": ["read"],
        "locations": [location],
        "limits": {"max_calls": calls},
    }


def _register(broker: Any, kit: Any, details: list[dict[str, Any]], task: str = "t-a") -> Any:
    return registered(broker, kit, launched(broker, kit, details), task, details)


def _count(broker: Any, kit: Any, token: str) -> Any:
    return broker.count_call(
        token, kind="resource_access", call=CALL, audience=None, presented=None, ctx=kit.ctx
    )[1]


def _budget(broker: Any, key: str) -> Any:
    with broker.store.write() as tx:
        return tx.get_call_budget(key)


def test_a_call_two_counted_grants_allow_spends_the_first_grants_budget(
    broker: Any, kit: Any
) -> None:
    narrow, wide = _read("https://rs.example/a/", 2), _read("https://rs.example/", 5)
    agent = _register(broker, kit, [narrow, wide])
    holder = budget_holder(agent.claims)
    answers = [_count(broker, kit, agent.token) for _ in range(2)]
    assert [(a.remaining, a.max_calls) for a in answers] == [(1, 2), (0, 2)]
    assert answers[0].grant == narrow
    assert _budget(broker, budget_key(holder, narrow)).calls == 2
    assert _budget(broker, budget_key(holder, wide)).calls == 0
    with pytest.raises(Forbidden):  # the first grant's budget is spent: no fall-through
        _count(broker, kit, agent.token)


def test_a_budget_is_kept_as_long_as_its_lineage_and_no_longer(broker: Any, kit: Any) -> None:
    grant = _read("https://rs.example/", 3)
    agent = _register(broker, kit, [grant])
    other = _register(broker, kit, [_read("https://rs.example/", 1)], task="t-b")
    handed = broker.delegate(
        agent.claims,
        delegate_to=other.claims.sub,
        scope=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=[grant],
    )
    skew = broker.config.clock_skew
    for issued in (agent, handed):
        budget = _budget(broker, budget_key(budget_holder(issued.claims), grant))
        assert issued.claims.max_exp
        assert budget.expires_at == issued.claims.max_exp + skew


def test_a_call_is_not_counted_for_a_token_revoked_in_the_store(broker: Any, kit: Any) -> None:
    grant = _read("https://rs.example/", 3)
    agent = _register(broker, kit, [grant])
    broker.revoke(kit.admin(broker).claims, level="agent", target=agent.claims.sub, ctx=kit.ctx)
    # The counter reads the live state itself, whatever validated the claims before.
    with pytest.raises(Forbidden, match="no longer valid"):
        CallCounting(broker.kernel).prepare_count(agent.claims, "resource_access", CALL, kit.ctx)
    budget = _budget(broker, budget_key(budget_holder(agent.claims), grant))
    assert budget.calls == 0
