"""Structured grants in the store (migration 0015), on every backend: grants beside the
scopes of apps, launch tokens and agents; operators' grant types; call budgets counted
all or none along their parents, per tenant, pruned at expiry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasklease.core.errors import Conflict
from tasklease.core.store import (
    AgentRecord,
    AppRecord,
    CallBudget,
    GrantTypeRecord,
    LaunchTokenRecord,
    Store,
)

GRANTS = (
    {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": ["https://pay.example/payees/P"],
        "limits": {"max_amount": "500", "currency": "EUR", "max_calls": 3},
    },
    {"type": "scope", "scope": "write:payments:1", "limits": {"max_calls": 1}},
)


def test_grants_travel_with_apps_launch_tokens_and_agents(store: Store) -> None:
    app = AppRecord(
        "app-pay-1",
        "pay",
        "pa-1",
        "h",
        ("read:data:*",),
        600,
        "active",
        1.0,
        1.0,
        "admin",
        authorization_details=GRANTS,
    )
    launch = LaunchTokenRecord(
        "a" * 64, "payer", (), 300, True, 1.0, 9e9, "admin", authorization_details=GRANTS[:1]
    )
    agent = AgentRecord(
        "spiffe://t/agent/o/t/i",
        b"k" * 32,
        "o",
        "t",
        (),
        "",
        "admin",
        1.0,
        authorization_details=GRANTS[1:],
    )
    plain = replace(agent, agent_id="spiffe://t/agent/o/t/j", scope=("read:data:1",))
    with store.write() as tx:
        tx.insert_app(app)
        tx.insert_launch_token(launch)
        tx.insert_agent(agent)
        tx.insert_agent(plain)
    assert store.get_app(app.app_id) == app
    assert store.get_launch_token(launch.token_hash) == launch
    assert store.get_agent(agent.agent_id) == agent
    assert store.get_agent(plain.agent_id) == plain  # no grants: ()
    narrower = replace(app, authorization_details=GRANTS[:1])
    with store.write() as tx:
        tx.update_app(narrower)
    assert store.get_app(app.app_id) == narrower


def test_grant_types_round_trip_and_delete_per_tenant(store: Store) -> None:
    record = GrantTypeRecord(
        "dataset_query", '{"type":"object"}', '{"rows":"at_most"}', "queries", 5.0, "admin"
    )
    other = replace(record, name="a_first")
    with store.write() as tx:
        tx.insert_grant_type(record)
        tx.insert_grant_type(other)
    # A second of one name is refused, never a silent replacement of the first's rule.
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_grant_type(replace(record, narrowing="{}"))
    assert store.get_grant_type("dataset_query") == record
    assert store.list_grant_types() == [other, record]
    assert store.for_tenant("acme").list_grant_types() == []
    with store.write() as tx:
        assert tx.delete_grant_type("dataset_query")
        assert not tx.delete_grant_type("dataset_query")
    assert store.get_grant_type("dataset_query") is None


def test_calls_count_along_the_parents_all_or_none(store: Store) -> None:
    with store.write() as tx:
        tx.put_call_budget(CallBudget("root", "", 2, 0, 100.0))
        tx.put_call_budget(CallBudget("child", "root", 5, 0, 100.0))
        tx.put_call_budget(CallBudget("child", "", 99, 0, 100.0))  # exists: unchanged
        tx.put_call_budget(CallBudget("orphan", "gone", 5, 0, 100.0))
    with store.write() as tx:
        assert tx.count_call("child") == ""
        assert tx.count_call("root") == ""
        assert tx.count_call("child") == "root"  # root spent: nothing counted
        assert tx.count_call("orphan") == "gone"  # a missing parent: fail closed
        assert tx.get_call_budget("child") == CallBudget("child", "root", 5, 1, 100.0)
        assert tx.get_call_budget("root") == CallBudget("root", "", 2, 2, 100.0)
    with store.write() as tx:
        assert tx.get_call_budget("orphan") == CallBudget("orphan", "gone", 5, 0, 100.0)
    other = store.for_tenant("acme")
    with other.write() as tx:
        assert tx.count_call("root") == "root"  # another tenant's budgets are not ours
    assert store.prune(100.0) >= 3
    with store.write() as tx:
        assert tx.get_call_budget("root") is None
