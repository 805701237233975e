"""A decision's request and entities reach Cedar as JSON text (``core.policy``): the same
decision as from the dicts cedarpy encodes itself, and a value the encoder refuses still
denies (Cedar's error) instead of raising."""

from __future__ import annotations

import cedarpy
import pytest

from tasklease.core.policy import (
    DEFAULT_POLICY,
    _schema,
    compile_policies,
    default_policies,
    evaluate,
)
from tasklease.core.policyrequest import Actor, PolicyRequest

CAP = (
    '@id("up-to-50-eur")\n'
    "forbid (principal, action, resource)\n"
    'when { resource has max_amount && resource.max_amount.greaterThan(decimal("50.0")) };\n'
    '@id("prod-only")\n'
    'forbid (principal is LaunchToken, action == Action::"register", resource)\n'
    'unless { principal.hasTag("cluster") && principal.getTag("cluster") == "prod-é" };\n'
)
PAYMENT = {
    "type": "resource_access",
    "actions": ["pay"],
    "limits": {"max_amount": "100", "currency": "EUR", "allowed_values": {"payee": ["P"]}},
}


def _launch(tags: dict[str, str]) -> Actor:
    attrs = {"agent_name": "agent-ü", "created_by": "admin"}
    return Actor("LaunchToken", "0123456789abcdef", attrs, tags, "app-1")


REQUESTS = [
    PolicyRequest("register", _launch({}), scopes=("read:data:*",), ttl=300, now=1_800_000_000),
    PolicyRequest("register", _launch({"cluster": "prod-é"}), scopes=("read:data:1",), ttl=60),
    PolicyRequest("register", _launch({"cluster": "prod-é"}), details=(PAYMENT,), ttl=60),
    PolicyRequest("register", _launch({}), scopes=("read:data:*",), within_ceiling=False),
    PolicyRequest("delegate", Actor("Agent", "spiffe://t/agent/o/t/1"), details=(PAYMENT,)),
    PolicyRequest("launch", Actor("App", "app-1"), scopes=("read:data:*",), human="user:ü"),
]


@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize("with_cap", [False, True])
def test_json_text_decides_as_the_dicts_do(request_: PolicyRequest, with_cap: bool) -> None:
    files = [("default.cedar", DEFAULT_POLICY)] + ([("cap.cedar", CAP)] if with_cap else [])
    policies = compile_policies(files, "test") if with_cap else default_policies()
    cedar_request, entities = request_.cedar()
    expected = cedarpy.is_authorized(cedar_request, policies.compiled, entities, schema=_schema())
    decision = evaluate(policies, request_)
    assert decision.allowed == (expected.decision == cedarpy.Decision.Allow)
    names = expected.diagnostics.id_annotations_by_reason
    assert decision.policies == tuple(sorted(names.get(p, p) for p in expected.diagnostics.reasons))
    assert not decision.errors and not expected.diagnostics.errors


def test_a_fact_the_encoder_refuses_denies() -> None:
    request_ = PolicyRequest("register", _launch({"cluster": "a\ud800b"}), scopes=("read:data:*",))
    decision = evaluate(default_policies(), request_)
    assert not decision.allowed and decision.errors
