"""Decisions remembered by what a policy set reads (``core.policyreads``): the same
decision as Cedar's on every request, Cedar asked once per distinct reading, and never a
remembered answer for a set that reads more or a request the schema would refuse."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tasklease.core.policyreads as policyreads
from tasklease.core.policy import (
    DEFAULT_POLICY,
    CompiledPolicies,
    Decision,
    _cedar,
    compile_policies,
    default_policies,
    evaluate,
)
from tasklease.core.policyreads import reads_of
from tasklease.core.policyrequest import ACTIONS, Actor, PolicyRequest

# A custom set that reads a little more of the context: remembered by three attributes.
NARROW = (
    '@id("shallow")\n'
    "forbid (principal, action, resource) when { context.depth > 2 };\n"
    '@id("alice-launches")\n'
    'permit (principal is App, action == Action::"launch", resource)\n'
    'when { context.human == "user:alice" || !context.within_ceiling };\n'
)
PAYMENT = {
    "type": "resource_access",
    "actions": ["pay"],
    "limits": {"max_amount": "100.5", "currency": "EUR", "max_calls": 3},
}


def _est(text: str) -> dict[str, Any]:
    est: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    return est


def _policy(body: str) -> str:
    return f'@id("p")\n{body}\n'


def _when(condition: str, scope: str = "principal, action, resource") -> str:
    return _policy(f"permit ({scope}) when {{ {condition} }};")


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        (DEFAULT_POLICY, ("within_ceiling",)),
        (NARROW, ("depth", "human", "within_ceiling")),
        (_policy("permit (principal, action, resource);"), ()),
        (_when("context.attested").replace("when", "unless"), ("attested",)),
        (_when('if context.depth < 1 then true else context.domain == "d"'), ("depth", "domain")),
        # An entity's id, attributes, tags, the hierarchy: read beyond what is remembered.
        (_policy('permit (principal == App::"a", action, resource);'), None),
        (_policy('permit (principal in App::"a", action, resource);'), None),
        (_policy('permit (principal is Agent in App::"a", action, resource);'), None),
        (_policy('permit (principal, action, resource == Grants::"requested");'), None),
        (_when("principal.depth < 2", "principal is Agent, action, resource"), None),
        (_when('resource.scopes.contains("x")'), None),
        (_when("resource has max_calls"), None),
        (_when("context has human"), None),
        (_when('principal.hasTag("k")', "principal is LaunchToken, action, resource"), None),
        (_when('principal in App::"a"'), None),
        (_when('decimal("1.0").lessThan(decimal("2.0"))'), None),
        (_when("[1, 2].contains(context.depth)"), None),
        (_when('context.human like "user:*"'), None),
    ],
)
def test_what_a_set_reads(text: str, reads: tuple[str, ...] | None) -> None:
    assert reads_of(_est(text)) == reads


def test_a_template_is_read_as_reading_everything() -> None:
    est = _est(_policy("permit (principal, action, resource);"))
    est["templates"] = {"t0": est["staticPolicies"]["policy0"]}
    assert reads_of(est) is None


def test_a_set_is_remembered_only_if_every_file_reads_little() -> None:
    assert default_policies().remembered is not None
    reading = _policy("permit (principal is Agent, action, resource) when { principal.depth < 2 };")
    mixed = compile_policies([("a.cedar", DEFAULT_POLICY), ("b.cedar", reading)], "test")
    assert mixed.remembered is None


def _asks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts Cedar's decisions from now on."""
    calls: list[int] = []
    real = cedarpy.is_authorized

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cedarpy, "is_authorized", counted)
    return calls


def _registration(k: int, **fields: Any) -> PolicyRequest:
    attrs = {"agent_name": f"agent-{k}", "created_by": "admin"}
    actor = Actor("LaunchToken", f"{k:016x}", attrs, {"cluster": f"c{k % 3}"}, "app-1")
    base: dict[str, Any] = {"scopes": (f"read:data:{k}",), "ttl": 300, "now": 1_800_000_000 + k}
    return PolicyRequest("register", actor, **(base | fields))


def test_cedar_decides_once_per_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    policies = compile_policies([("default.cedar", DEFAULT_POLICY)], "test")
    calls = _asks(monkeypatch)
    # Every registration its own launch token, task, scopes and time: one reading.
    decisions = [evaluate(policies, _registration(k)) for k in range(50)]
    assert len(calls) == 1
    assert all(d.allowed and d.policies == ("issue-within-parent",) for d in decisions)
    refused = evaluate(policies, _registration(50, within_ceiling=False))
    assert not refused.allowed and len(calls) == 2
    # A set that reads more asks Cedar every time.
    cap = _policy("forbid (principal, action, resource) when { resource has max_calls };")
    reading = compile_policies([("a.cedar", DEFAULT_POLICY), ("b.cedar", cap)], "test")
    for k in range(3):
        assert evaluate(reading, _registration(k)).allowed
    assert len(calls) == 5


@pytest.mark.parametrize(
    "fields",
    [
        {"scopes": (), "details": ({**PAYMENT, "limits": {"max_calls": 1 << 70}},)},
        {"details": ({**PAYMENT, "limits": {"max_amount": "1e18", "currency": "EUR"}},)},
        {"ttl": 1 << 64},
        {"now": -(1 << 63) - 1},
        {"human": "user:\ud800"},
        {"scopes": ("read:data:\udfff",)},
        {"within_ceiling": 1},
    ],
)
def test_a_request_the_schema_refuses_is_refused_after_an_allow(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]
) -> None:
    policies = compile_policies([("default.cedar", DEFAULT_POLICY)], "test")
    assert evaluate(policies, _registration(1)).allowed  # the reading is remembered
    calls = _asks(monkeypatch)
    request = _registration(2, **fields)
    assert not request.well_typed()
    decision = evaluate(policies, request)
    assert len(calls) == 1  # Cedar asked, not the memory
    assert not decision.allowed


def test_an_actor_attribute_of_another_type_is_refused_after_an_allow() -> None:
    policies = compile_policies([("default.cedar", DEFAULT_POLICY)], "test")
    assert evaluate(policies, _registration(1)).allowed
    actor = Actor("LaunchToken", "ab", {"agent_name": 7, "created_by": "admin"})
    request = PolicyRequest("register", actor, scopes=("read:data:x",))
    assert not request.well_typed() and not evaluate(policies, request).allowed
    tagged = Actor("Agent", "ab", {"depth": True})
    assert not PolicyRequest("delegate", tagged).well_typed()


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policyreads, "_CAPACITY", 4)
    now = _policy("permit (principal, action, resource) when { context.now < 1800000010 };")
    policies = compile_policies([("now.cedar", now)], "test")
    assert policies.remembered is not None
    for k in range(20):
        assert evaluate(policies, _registration(k)).allowed == (k < 10)
        assert len(policies.remembered._decisions) <= 4


_TEXT = st.sampled_from(["", "admin", "user:alice", "user:bob", "é", "prod", "lone \ud800"])
_ACTORS = st.builds(
    Actor,
    type=st.sampled_from(["App", "Operator", "LaunchToken", "Workload", "Agent"]),
    id=st.text(min_size=1, max_size=8),
    attrs=st.fixed_dictionaries(
        {},
        optional={
            "agent_name": _TEXT | st.integers(0, 2),
            "created_by": _TEXT,
            "task_id": _TEXT,
            "depth": st.integers(0, 6) | st.sampled_from([1 << 64, "2", False]),
            "attestor": _TEXT,
        },
    ),
    tags=st.dictionaries(_TEXT, _TEXT, max_size=2),
    app=st.sampled_from(["", "app-1", "app-2"]),
)
_DETAILS = st.lists(
    st.sampled_from(
        [
            PAYMENT,
            {"type": "scope", "scope": "read:data:7"},
            {"type": "api", "actions": ["get"], "locations": ["https://x.example"]},
            {"type": "api", "limits": {"max_calls": 1 << 80}},
        ]
    ),
    max_size=2,
).map(tuple)
_REQUESTS = st.builds(
    PolicyRequest,
    operation=st.sampled_from(ACTIONS),
    actor=_ACTORS,
    scopes=st.lists(st.sampled_from(["read:data:*", "write:logs:1"]), max_size=2).map(tuple),
    details=_DETAILS,
    ttl=st.integers(0, 3600) | st.just(1 << 63),
    now=st.integers(1_800_000_000, 1_800_000_003),
    tenant=_TEXT,
    within_ceiling=st.booleans(),
    human=_TEXT,
    depth=st.integers(0, 4),
    domain=_TEXT,
)
_SETS: dict[str, CompiledPolicies] = {
    "default": default_policies(),
    "narrow": compile_policies([("default.cedar", DEFAULT_POLICY), ("n.cedar", NARROW)], "t"),
}


def _same(remembered: Decision, fresh: Decision) -> bool:
    return (remembered.allowed, remembered.policies, bool(remembered.errors)) == (
        fresh.allowed,
        fresh.policies,
        bool(fresh.errors),
    )


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(_REQUESTS, min_size=1, max_size=8), name=st.sampled_from(list(_SETS)))
def test_a_remembered_decision_is_cedars(requests: list[PolicyRequest], name: str) -> None:
    policies = _SETS[name]
    for request in requests:
        assert _same(evaluate(policies, request), _cedar(policies, request)), request
