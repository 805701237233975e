"""Whose budget a counted call spends (core.calls): a delegated token's grant keeps a
budget of its own, apart from the delegate's own tokens', and an offline chain's leaf
spends none, whatever ``jti`` its deriver chose."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tasklease.core.calls import CallCounting, budget_holder
from tasklease.core.errors import Forbidden

GRANT = {
    "type": "resource_access",
    "actions": ["read"],
    "locations": ["https://rs.example/"],
    "limits": {"max_calls": 2},
}
CALL = {"action": "read", "location": "https://rs.example/x"}


def launched(broker: Any, kit: Any, details: list[dict[str, Any]] | None = None) -> str:
    token, _ = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="counted",
        allowed_scope=None,
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
        authorization_details=details or [GRANT],
    )
    return str(token)


def registered(
    broker: Any, kit: Any, launch: str, task: str, details: list[dict[str, Any]] | None = None
) -> Any:
    args, _ = kit.register_args(broker, launch, (), task_id=task)
    return broker.register(**args, authorization_details=details or [GRANT])


def _count(broker: Any, kit: Any, token: str) -> Any:
    return broker.count_call(
        token, kind="resource_access", call=CALL, audience=None, presented=None, ctx=kit.ctx
    )[1]


def test_an_offline_leaf_is_its_own_thread_under_its_root(broker: Any, kit: Any) -> None:
    agent = registered(broker, kit, launched(broker, kit), "t-a")
    assert budget_holder(agent.claims) == f"agent:{agent.claims.sub}"
    # A leaf whose deriver chose the agent's token's jti as its own: not the agent's thread.
    raw = {**agent.claims.raw, "offline": {"root_jti": "root-1"}}
    leaf = replace(agent.claims, sub=agent.claims.sub + "/helper", raw=raw)
    assert budget_holder(leaf) == f"offline:root-1:{agent.claims.jti}"


def test_a_delegated_grant_never_shares_the_delegates_own_budget(broker: Any, kit: Any) -> None:
    launch = launched(broker, kit)
    giver, taker = (
        registered(broker, kit, launch, "t-giver"),
        registered(broker, kit, launch, "t-taker"),
    )
    handed = broker.delegate(
        giver.claims,
        delegate_to=taker.claims.sub,
        scope=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=[GRANT],
    )
    assert budget_holder(handed.claims) != budget_holder(taker.claims)
    # The taker spends its own two calls; the grant handed to it still has the giver's.
    assert [_count(broker, kit, taker.token).remaining for _ in range(2)] == [1, 0]
    with pytest.raises(Forbidden):
        _count(broker, kit, taker.token)
    assert [_count(broker, kit, handed.token).remaining for _ in range(2)] == [1, 0]
    with pytest.raises(Forbidden):  # and the giver's budget is the one it drew on
        _count(broker, kit, giver.token)


def test_counting_refuses_an_offline_leaf_even_when_its_holder_is_an_agent_of_record(
    broker: Any, kit: Any
) -> None:
    # A leaf's subject is nested under its delegator's and so is no agent of record; were
    # it one, the count would still be refused, and no agent's budget touched.
    agent = registered(broker, kit, launched(broker, kit), "t-a")
    raw = {**agent.claims.raw, "offline": {"root_jti": agent.claims.jti}}
    leaf = replace(agent.claims, raw=raw)
    with pytest.raises(Forbidden) as refused:
        CallCounting(broker.kernel).prepare_count(leaf, "resource_access", CALL, kit.ctx)
    assert "offline chain" in refused.value.detail
    assert _count(broker, kit, agent.token).remaining == 1


def _read(location: str, **limits: Any) -> dict[str, Any]:
    grant: dict[str, Any] = {
        "type": "resource_access",
        "actions": ["read"],
        "locations": [location],
    }
    return {**grant, "limits": limits} if limits else grant


def test_a_delegated_grant_draws_on_the_budget_of_the_grant_that_covers_it(
    broker: Any, kit: Any
) -> None:
    # The giver holds, in order: an uncounted grant on /b/, one call on /a/, three on /b/.
    # What it hands on for /b/ counts against its three on /b/: neither against the
    # budget of a grant that does not cover it, nor against one no budget was kept for.
    unlimited, one_a, three_b = (
        _read("https://rs.example/b/"),
        _read("https://rs.example/a/", max_calls=1),
        _read("https://rs.example/b/", max_calls=3),
    )
    details = [unlimited, one_a, three_b]
    giver = registered(broker, kit, launched(broker, kit, details), "t-giver", details)
    taker = registered(broker, kit, launched(broker, kit), "t-taker")
    handed = broker.delegate(
        giver.claims,
        delegate_to=taker.claims.sub,
        scope=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=[three_b],
    )

    def count(token: str, location: str) -> Any:
        call = {"action": "read", "location": location}
        return broker.count_call(
            token, kind="resource_access", call=call, audience=None, presented=None, ctx=kit.ctx
        )[1]

    assert [count(handed.token, "https://rs.example/b/x").remaining for _ in range(2)] == [2, 1]
    assert count(giver.token, "https://rs.example/a/x").remaining == 0  # /a/ untouched


def test_a_call_an_uncounted_grant_allows_too_is_not_counted(broker: Any, kit: Any) -> None:
    details = [_read("https://rs.example/", max_calls=1), _read("https://rs.example/")]
    agent = registered(broker, kit, launched(broker, kit, details), "t-a", details)
    answers = [_count(broker, kit, agent.token) for _ in range(3)]
    assert [(a.counted, a.remaining) for a in answers] == [(False, 0)] * 3
