"""The ``Grants`` entity's ``max_calls`` and ``not_after`` are the largest of the
requested grants' (docs/policy.md): a grant without the limit has none, so the largest
is unbounded and the attribute is absent. A policy that requires every grant to be
bounded is not satisfied by one bounded grant beside an unbounded one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tasklease.core.policy import DEFAULT_POLICY, compile_policies, evaluate
from tasklease.core.policyrequest import Actor, PolicyRequest

BOUNDED = (
    '@id("calls-bounded")\n'
    'forbid (principal, action == Action::"delegate", resource)\n'
    "unless { resource has max_calls && resource.max_calls <= 10 };\n"
    '@id("ends-within-a-day")\n'
    'forbid (principal, action == Action::"delegate", resource)\n'
    "unless { resource has not_after && resource.not_after <= context.now + 86400 };\n"
)
NOW = 1_900_000_000
LIMITED = {
    "type": "resource_access",
    "actions": ["pay"],
    "limits": {"max_calls": 5, "not_after": NOW + 3600},
}
UNLIMITED = {"type": "resource_access", "actions": ["pay"]}
NO_CALLS = {"type": "resource_access", "actions": ["pay"], "limits": {"not_after": NOW + 60}}
NO_END = {"type": "resource_access", "actions": ["pay"], "limits": {"max_calls": 1}}


def _delegation(*details: Mapping[str, Any], scopes: tuple[str, ...] = ()) -> PolicyRequest:
    agent = Actor("Agent", "spiffe://t/agent/o/t/1", {"task_id": "t", "orch_id": "o"})
    return PolicyRequest("delegate", agent, scopes, details, ttl=60, now=NOW)


POLICIES = compile_policies((("default.cedar", DEFAULT_POLICY), ("b.cedar", BOUNDED)), "test")


def test_bounded_grants_are_allowed() -> None:
    assert evaluate(POLICIES, _delegation(LIMITED)).allowed


@pytest.mark.parametrize(
    ("request_", "policy"),
    [
        (_delegation(LIMITED, UNLIMITED), "calls-bounded"),
        (_delegation(LIMITED, NO_CALLS), "calls-bounded"),
        (_delegation(LIMITED, NO_END), "ends-within-a-day"),
        (_delegation(LIMITED, scopes=("read:data:1",)), "calls-bounded"),
    ],
)
def test_an_unbounded_grant_beside_a_bounded_one_is_unbounded(
    request_: PolicyRequest, policy: str
) -> None:
    decision = evaluate(POLICIES, request_)
    assert not decision.allowed
    assert policy in decision.policies
