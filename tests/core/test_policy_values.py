"""A grant without ``allowed_values`` allows any value, so a policy that lets payment
grants out only for known payees must see it: ``unbounded_values`` (as
``unbounded_amount`` for an amount), not just the union of the other grants' values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from tests.core.conftest import CTX

from tasklease.core.errors import Forbidden
from tasklease.core.policy import DEFAULT_POLICY, compile_policies, evaluate
from tasklease.core.policyrequest import Actor, PolicyRequest
from tasklease.core.store import AuditQuery

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


# A policy letting payments out only to known payees' locations: it must see a grant
# without ``locations`` (any location), as ``unbounded_values`` shows any value.
KNOWN_LOCATIONS = (
    '@id("known-locations")\n'
    'forbid (principal, action == Action::"launch", resource)\n'
    'when { resource.actions.contains("pay") }\n'
    "unless { !resource.unbounded_locations\n"
    '         && ["https://pay.example/payees/P"].containsAll(resource.locations) };\n'
    '@id("no-medical")\n'
    'forbid (principal, action == Action::"launch", resource)\n'
    'when { resource.unbounded_datatypes || resource.datatypes.contains("medical") };\n'
)
AT_P = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": ["https://pay.example/payees/P"],
    "datatypes": ["invoice"],
}
ANYWHERE = {"type": "resource_access", "actions": ["pay"], "datatypes": ["invoice"]}
ANY_DATA = {"type": "resource_access", "actions": ["read"], "locations": ["https://x.example"]}


def test_a_grant_without_locations_or_datatypes_is_seen_as_unbounded(broker: Any, kit: Any) -> None:
    """Found by review: ``locations`` and ``datatypes`` were the union of the grants that
    listed some, but a grant without them allows every location or datatype: a payment
    grant to anywhere (alone, or beside one to a known payee) passed a policy that lets
    out only known locations, and no policy could tell. ``unbounded_locations`` and
    ``unbounded_datatypes`` say it, as ``unbounded_values`` does for values."""
    files = (("default.cedar", DEFAULT_POLICY), ("places.cedar", KNOWN_LOCATIONS))
    broker.policy.use(compile_policies(files, "test"))

    def launch(*details: Mapping[str, Any]) -> str:
        token, _ = broker.create_launch_token(
            kit.admin(broker).claims,
            agent_name="payer",
            allowed_scope=[],
            authorization_details=list(details),
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=CTX,
        )
        return token

    assert launch(AT_P)
    for refused, by in (
        ((ANYWHERE,), "known-locations"),
        ((AT_P, ANYWHERE), "known-locations"),
        ((ANY_DATA,), "no-medical"),
        ((AT_P, ANY_DATA), "no-medical"),
    ):
        with pytest.raises(Forbidden) as info:
            launch(*refused)
        assert info.value.denial_id
        events, _ = broker.audit_events(AuditQuery(limit=1000))
        (event,) = [e for e in events if info.value.denial_id in e.detail]
        denied_by = event.detail.split("policy=deny[", 1)[1].split("]", 1)[0]
        assert by in denied_by.split(",")
    # A request of plain scopes names no location or datatype it could widen.
    scopes = PolicyRequest("launch", Actor("App", "app-1"), ("read:data:1",), ttl=60)
    assert evaluate(compile_policies(files, "t"), scopes).allowed
