"""A grant without ``allowed_values`` allows any value, so a policy that lets payment
grants out only for known payees must see it: ``unbounded_values`` (as
``unbounded_amount`` for an amount), not just the union of the other grants' values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklease.core.policy import DEFAULT_POLICY, compile_policies, evaluate
from tasklease.core.policyrequest import Actor, PolicyRequest

# docs/policy.md's example.
KNOWN_PAYEES = (
    '@id("known-payees")\n'
    'forbid (principal, action == Action::"launch", resource)\n'
    'when { resource.actions.contains("pay") }\n'
    "unless { !resource.unbounded_values && !resource.values.isEmpty()\n"
    '         && ["payee=P", "payee=Q"].containsAll(resource.values) };\n'
)
TO_P = {
    "type": "resource_access",
    "actions": ["pay"],
    "limits": {"allowed_values": {"payee": ["P"]}},
}
TO_ANYONE = {"type": "resource_access", "actions": ["pay"], "limits": {"max_calls": 1}}


def _launch(*details: Mapping[str, Any]) -> PolicyRequest:
    return PolicyRequest("launch", Actor("App", "app-1"), ("read:data:1",), details, ttl=60)


def test_a_payment_grant_to_anyone_beside_one_to_a_known_payee_is_refused() -> None:
    files = (("default.cedar", DEFAULT_POLICY), ("payees.cedar", KNOWN_PAYEES))
    policies = compile_policies(files, "test")
    assert evaluate(policies, _launch(TO_P)).allowed
    refused = evaluate(policies, _launch(TO_P, TO_ANYONE))
    assert not refused.allowed and refused.policies == ("known-payees",)
    assert not evaluate(policies, _launch(TO_ANYONE)).allowed


def test_an_integer_value_is_not_the_string_a_policy_lists() -> None:
    """Grants and resource servers tell the integer ``1`` from the string ``"1"``; a policy
    listing the string payee lets out neither the integer nor any other value."""
    only_one = KNOWN_PAYEES.replace('["payee=P", "payee=Q"]', '["payee=1"]')
    policies = compile_policies((("default.cedar", DEFAULT_POLICY), ("p.cedar", only_one)), "t")

    def pay(value: object) -> dict[str, Any]:
        return {**TO_P, "limits": {"allowed_values": {"payee": [value]}}}

    assert evaluate(policies, _launch(pay("1"))).allowed
    refused = evaluate(policies, _launch(pay(1)))
    assert not refused.allowed and refused.policies == ("known-payees",)
    assert not evaluate(policies, _launch(pay("1"), pay(1))).allowed
    integers = KNOWN_PAYEES.replace('["payee=P", "payee=Q"]', '["payee#1"]')
    by_number = compile_policies((("default.cedar", DEFAULT_POLICY), ("p.cedar", integers)), "t")
    assert evaluate(by_number, _launch(pay(1))).allowed
    assert not evaluate(by_number, _launch(pay("1"))).allowed
