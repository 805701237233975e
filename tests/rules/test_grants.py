"""Structured grants (rules.grants): parsing, and attenuation as property tests.

The properties: covering is reflexive and transitive for every type; whatever a covered
grant allows, its cover allows too (so a narrower grant never lets a resource server do
more); a sequence of delegations in which each hop passes the attenuation check never
allows more than the root; ``common`` is covered by both its inputs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from tasklease.rules import grants as g
from tasklease.rules import grantuse as gu
from tasklease.rules import scopes

ACTIONS = ["read", "pay", "refund", "list"]
LOCATIONS = [
    "https://pay.example",
    "https://pay.example/payees",
    "https://pay.example/payees/",
    "https://pay.example/payees/P",
    "https://pay.example/payees/Q",
    "https://pay.example/payees/P/history",
    "https://other.example/x",
]
DATATYPES = ["invoice", "receipt", "card"]
PAYEES = ["P", "Q", "R"]
SCOPES = ["read:data:*", "read:data:1", "read:data:2", "write:data:1", "write:pay:*"]
RULES = {
    "region_access": g.TypeRule(
        (
            ("regions", "subset"),
            ("rows", "at_most"),
            ("path", "prefix"),
            ("rating", "at_least"),
            ("where", "path"),
        )
    )
}


def _sub(items: list[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique=True)


# Strategies built once: Hypothesis checks each strategy object the first time it is
# drawn from, and building them afresh for every draw made that most of these tests' time.
_BOOL = st.booleans()
_KINDS = st.sampled_from(["scope", "resource_access", "region_access"])
_SCOPE = st.sampled_from(SCOPES)
_ACTIONS = _sub(ACTIONS)
_LOCATIONS = _sub(LOCATIONS)
_DATATYPES = _sub(DATATYPES)
_IDENTIFIER = st.sampled_from(["acct-1", "acct-2"])
_REGIONS = _sub(["eu", "us", "ap"])
_ROWS = st.integers(0, 100)
_PATH = st.sampled_from(["/a", "/a/b", "/a/b/c", "/b"])
_WHERE = st.sampled_from(["/a", "/a/b", "/a/b/c", "/ab", "/b", "/a/"])
_RATING = st.integers(0, 5)
_TIER = st.sampled_from(["gold", "silver"])
_MAX_AMOUNT = st.integers(0, 1000)
_CURRENCY = st.sampled_from(["EUR", "USD"])
_MAX_CALLS = st.integers(1, 20)
_NOT_BEFORE = st.integers(0, 100)
_NOT_AFTER = st.integers(101, 200)
_PAYEES = _sub(PAYEES)
_PAYEE = st.sampled_from(PAYEES)
_CALL_NOW = st.integers(0, 210)
_CALL_SCOPE = st.none() | st.sampled_from(["read:data:1", "read:data:x", "write:pay:9"])
_CALL_ACTION = st.none() | st.sampled_from(ACTIONS)
_CALL_LOCATION = st.none() | st.sampled_from(LOCATIONS)
_CALL_DATATYPE = st.none() | st.sampled_from(DATATYPES)
_CALL_IDENTIFIER = st.none() | _IDENTIFIER
_CALL_AMOUNT = st.none() | st.integers(0, 1200)
_CALL_CURRENCY = st.none() | _CURRENCY
_CALL_FIELDS = st.sampled_from([{}, {"regions": "eu"}, {"tier": "gold"}])


@st.composite
def limits(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(_BOOL):
        out["max_amount"] = str(draw(_MAX_AMOUNT))
        out["currency"] = draw(_CURRENCY)
    if draw(_BOOL):
        out["max_calls"] = draw(_MAX_CALLS)
    if draw(_BOOL):
        out["not_before"] = draw(_NOT_BEFORE)
    if draw(_BOOL):
        out["not_after"] = draw(_NOT_AFTER)
    if draw(_BOOL):
        out["allowed_values"] = {"payee": draw(_PAYEES)}
    return out


_LIMITS = limits()


@st.composite
def grants(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(_KINDS)
    out: dict[str, Any] = {"type": kind}
    if kind == "scope":
        out["scope"] = draw(_SCOPE)
    elif kind == "resource_access":
        out["actions"] = draw(_ACTIONS)
        if draw(_BOOL):
            out["locations"] = draw(_LOCATIONS)
        if draw(_BOOL):
            out["datatypes"] = draw(_DATATYPES)
        if draw(_BOOL):
            out["identifier"] = draw(_IDENTIFIER)
    else:
        if draw(_BOOL):
            out["regions"] = draw(_REGIONS)
        if draw(_BOOL):
            out["rows"] = draw(_ROWS)
        if draw(_BOOL):
            out["path"] = draw(_PATH)
        if draw(_BOOL):
            out["where"] = draw(_WHERE)
        if draw(_BOOL):
            out["rating"] = draw(_RATING)
        if draw(_BOOL):
            out["tier"] = draw(_TIER)
    lim = draw(_LIMITS)
    if lim:
        out["limits"] = lim
    return g.parse_detail(out)


GRANTS = grants()


@st.composite
def narrower(draw: st.DrawFn, parent: dict[str, Any]) -> dict[str, Any]:
    """A grant the rules must accept as covered by ``parent`` (built by narrowing)."""
    child = {k: v for k, v in parent.items() if k != "limits"}
    kind = parent["type"]
    if kind == "scope" and parent["scope"].endswith(":*") and draw(_BOOL):
        child["scope"] = parent["scope"][:-1] + draw(st.sampled_from(["1", "2", "x"]))
    elif kind == "resource_access":
        child["actions"] = draw(_sub(parent["actions"]))
        if "locations" in parent:
            below = [
                loc
                for loc in LOCATIONS
                if any(g.location_covers(p, loc) for p in parent["locations"])
            ]
            child["locations"] = draw(_sub(below))
        elif draw(_BOOL):
            child["locations"] = draw(_sub(LOCATIONS))
        if "datatypes" in parent:
            child["datatypes"] = draw(_sub(parent["datatypes"]))
        if "identifier" not in parent and draw(_BOOL):
            child["identifier"] = "acct-1"
    elif kind == "region_access":
        if "regions" in parent:
            child["regions"] = draw(_sub(parent["regions"]))
        if "rows" in parent:
            child["rows"] = draw(st.integers(0, parent["rows"]))
        if "path" in parent:
            child["path"] = parent["path"] + draw(st.sampled_from(["", "/z"]))
        if "where" in parent:
            below = "z" if parent["where"].endswith("/") else "/z"
            child["where"] = parent["where"] + draw(st.sampled_from(["", below]))
        if "rating" in parent:
            child["rating"] = draw(st.integers(parent["rating"], 9))
    plim = parent.get("limits", {})
    lim: dict[str, Any] = {}
    if "max_amount" in plim:
        lim["max_amount"] = str(draw(st.integers(0, int(Decimal(plim["max_amount"])))))
        lim["currency"] = plim["currency"]
    if "max_calls" in plim:
        lim["max_calls"] = draw(st.integers(1, plim["max_calls"]))
    if "not_before" in plim:
        lim["not_before"] = plim["not_before"] + draw(st.integers(0, 5))
    if "not_after" in plim:
        lim["not_after"] = plim["not_after"] - draw(st.integers(0, 5))
    if "allowed_values" in plim:
        lim["allowed_values"] = {"payee": draw(_sub(plim["allowed_values"]["payee"]))}
    if lim.get("not_before", -1) >= lim.get("not_after", 2**41):
        lim["not_before"], lim["not_after"] = plim["not_before"], plim["not_after"]
    if lim:
        child["limits"] = lim
    return g.parse_detail(child)


@st.composite
def nearby(draw: st.DrawFn, parent: dict[str, Any]) -> dict[str, Any]:
    """A narrower grant, then perhaps one change that may widen it: the cases the rules
    must tell apart."""
    child = dict(draw(narrower(parent)))
    lim = dict(child.get("limits", {}))
    change = draw(
        st.sampled_from(
            [
                "none",
                "amount",
                "calls",
                "before",
                "after",
                "payee",
                "drop",
                "action",
                "location",
                "scope",
                "rows",
                "path",
                "where",
            ]
        )
    )
    plim = parent.get("limits", {})
    # Widen by the least step past the parent's limit: the boundary the rules must hold.
    if change == "amount" and "max_amount" in lim:
        lim["max_amount"] = str(Decimal(plim["max_amount"]) + draw(st.sampled_from([1, 50])))
    elif change == "calls" and "max_calls" in lim:
        lim["max_calls"] = plim["max_calls"] + 1
    elif change == "before" and "not_before" in lim:
        lim["not_before"] = max(0, plim["not_before"] - draw(st.integers(1, 3)))
    elif change == "after" and "not_after" in lim:
        lim["not_after"] = plim["not_after"] + draw(st.integers(1, 3))
    elif change == "payee" and "allowed_values" in lim:
        lim["allowed_values"] = {"payee": PAYEES}
    elif change == "drop" and lim:
        lim.pop(draw(st.sampled_from(sorted(lim))))
        if ("max_amount" in lim) != ("currency" in lim):
            lim.pop("max_amount", None)
            lim.pop("currency", None)
    elif change == "action" and "actions" in child:
        child["actions"] = ACTIONS
    elif change == "location" and child["type"] == "resource_access":
        child["locations"] = [draw(st.sampled_from(LOCATIONS))]
    elif change == "scope" and child["type"] == "scope":
        child["scope"] = draw(st.sampled_from(SCOPES))
    elif change == "rows" and "rows" in child:
        child["rows"] += 1
    elif change == "path" and "path" in child:
        child["path"] = "/b"
    elif change == "where" and "where" in child:
        # A sibling that shares the parent's characters, or a way out of it.
        way_out = draw(st.sampled_from(["x", "/../b", "/%2e%2e"]))
        child["where"] = child["where"].rstrip("/") + way_out
    child.pop("limits", None)
    if lim:
        child["limits"] = lim
    return g.parse_detail(child)


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "kind": draw(_KINDS),
        "now": draw(_CALL_NOW),
        "scope": draw(_CALL_SCOPE),
        "action": draw(_CALL_ACTION),
        "location": draw(_CALL_LOCATION),
        "datatype": draw(_CALL_DATATYPE),
        "identifier": draw(_CALL_IDENTIFIER),
        "amount": draw(_CALL_AMOUNT),
        "currency": draw(_CALL_CURRENCY),
        "values": {"payee": draw(_PAYEE)},
        "fields": draw(_CALL_FIELDS),
    }


CALLS = calls()


@st.composite
def call_for(draw: st.DrawFn, grant: dict[str, Any]) -> dict[str, Any]:
    """A call built to be allowed by ``grant``, at the edges of its limits."""
    lim = grant.get("limits", {})
    call = draw(CALLS)
    call.update(
        kind=grant["type"], scope=None, action=None, location=None, datatype=None, identifier=None
    )
    start = lim.get("not_before", 0)
    end = lim.get("not_after", 211)
    call["now"] = draw(st.sampled_from([start, end - 1]))
    if grant["type"] == "scope":
        scope = grant["scope"]
        call["scope"] = scope[:-1] + "7" if scope.endswith("*") else scope
    if "actions" in grant:
        call["action"] = draw(st.sampled_from(grant["actions"]))
    if "locations" in grant:
        call["location"] = draw(st.sampled_from(grant["locations"]))
    if "datatypes" in grant:
        call["datatype"] = draw(st.sampled_from(grant["datatypes"]))
    if "identifier" in grant:
        call["identifier"] = grant["identifier"]
    if "max_amount" in lim:
        call["amount"] = draw(st.sampled_from([lim["max_amount"], "0"]))
        call["currency"] = lim["currency"]
    if "allowed_values" in lim:
        call["values"] = {"payee": draw(st.sampled_from(lim["allowed_values"]["payee"]))}
    fields = {}
    for name in ("regions", "tier"):
        if name in grant:
            value = grant[name]
            fields[name] = draw(st.sampled_from(value)) if isinstance(value, list) else value
    call["fields"] = fields
    return call


def allowed(grant: dict[str, Any], call: dict[str, Any]) -> bool:
    args = dict(call)
    kind = args.pop("kind")
    return gu.allows([grant], kind, **args) is not None


@given(grants())
def test_covering_is_reflexive(grant: dict[str, Any]) -> None:
    assert g.covers(grant, grant, RULES)


@given(st.data())
def test_narrowing_is_covered_and_transitive(data: st.DataObject) -> None:
    a = data.draw(GRANTS)
    b = data.draw(narrower(a))
    c = data.draw(narrower(b))
    assert g.covers(a, b, RULES) and g.covers(b, c, RULES)
    assert g.covers(a, c, RULES)


@given(grants(), grants(), grants())
def test_covering_is_transitive_for_any_grants(a: Any, b: Any, c: Any) -> None:
    if g.covers(a, b, RULES) and g.covers(b, c, RULES):
        assert g.covers(a, c, RULES)


@settings(max_examples=500)
@given(st.data())
def test_a_covered_grant_allows_nothing_its_cover_does_not(data: st.DataObject) -> None:
    parent = data.draw(GRANTS)
    child = data.draw(nearby(parent) | GRANTS)
    if g.covers(parent, child, RULES):
        for _ in range(5):
            call = data.draw(call_for(child))
            assert allowed(child, call)
            assert allowed(parent, call)


@settings(max_examples=300)
@given(st.data())
def test_a_narrowed_grant_allows_nothing_its_parent_does_not(data: st.DataObject) -> None:
    parent = data.draw(GRANTS)
    child = data.draw(narrower(parent))
    for _ in range(10):
        call = data.draw(CALLS)
        if allowed(child, call):
            assert allowed(parent, call)


@settings(max_examples=200)
@given(st.lists(grants(), min_size=1, max_size=3), st.data())
def test_no_sequence_of_delegations_widens_any_grant(
    root: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Each hop asks for arbitrary grants (narrower ones, and random ones); the kernel's
    check (uncovered == []) admits a hop or not. Whatever the last holder is allowed,
    the root is allowed."""
    held: list[dict[str, Any]] = root
    for _ in range(data.draw(st.integers(1, 5))):
        asked = [
            data.draw(nearby(data.draw(st.sampled_from(held))))
            if data.draw(_BOOL)
            else data.draw(GRANTS)
            for _ in range(data.draw(st.integers(1, 3)))
        ]
        if not g.uncovered(asked, held, RULES):
            held = asked
    for _ in range(10):
        call = data.draw(call_for(data.draw(st.sampled_from(held))) | CALLS)
        kind = call.pop("kind")
        if gu.allows(held, kind, **call) is not None:
            assert gu.allows(root, kind, **call) is not None


@settings(max_examples=500)
@given(st.data())
def test_a_covered_grant_never_has_more_calls(data: st.DataObject) -> None:
    """``max_calls`` is counted by the broker, not by ``allows``: covering alone keeps it."""
    parent = data.draw(GRANTS)
    child = data.draw(nearby(parent))
    if g.covers(parent, child, RULES) and "max_calls" in parent.get("limits", {}):
        assert child["limits"]["max_calls"] <= parent["limits"]["max_calls"]


@given(st.lists(grants(), max_size=3), st.lists(grants(), max_size=3), grants())
def test_what_common_covers_both_cover(first: Any, second: Any, child: Any) -> None:
    both = g.common(first, second, RULES)
    if not g.uncovered([child], both, RULES):
        assert not g.uncovered([child], first, RULES)
        assert not g.uncovered([child], second, RULES)


@given(grants())
def test_parsing_is_idempotent(grant: dict[str, Any]) -> None:
    assert g.parse_detail(grant) == grant
    assert g.parse_details([grant, grant]) == (grant,)


def test_the_payment_example() -> None:
    """Pay at most 500 EUR to payee P today; at most 100 is narrower, 600, payee Q and
    tomorrow are not."""
    today, tomorrow = "2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"
    parent = g.parse_detail(
        {
            "type": "resource_access",
            "actions": ["pay"],
            "locations": ["https://pay.example/payees/P"],
            "limits": {
                "max_amount": "500",
                "currency": "EUR",
                "not_before": today,
                "not_after": tomorrow,
                "allowed_values": {"payee": ["P"]},
            },
        }
    )

    def child(amount: str, payee: str, start: str, end: str) -> dict[str, Any]:
        return g.parse_detail(
            {
                "type": "resource_access",
                "actions": ["pay"],
                "locations": [f"https://pay.example/payees/{payee}"],
                "limits": {
                    "max_amount": amount,
                    "currency": "EUR",
                    "not_before": start,
                    "not_after": end,
                    "allowed_values": {"payee": [payee]},
                },
            }
        )

    assert g.covers(parent, child("100", "P", today, tomorrow))
    assert not g.covers(parent, child("600", "P", today, tomorrow))
    assert not g.covers(parent, child("100", "Q", today, tomorrow))
    assert not g.covers(parent, child("100", "P", tomorrow, "2030-01-03T00:00:00Z"))
    noon = parent["limits"]["not_before"] + 43200
    ok = {
        "now": noon,
        "action": "pay",
        "location": "https://pay.example/payees/P",
        "currency": "EUR",
        "values": {"payee": "P"},
    }
    assert gu.allows([parent], "resource_access", amount=500, **ok) is not None
    assert gu.allows([parent], "resource_access", amount="500.01", **ok) is None
    assert gu.allows([parent], "resource_access", **ok) is None  # the amount must be stated


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "scope", "scope": "read:data"},
        {"type": "scope", "scope": "read:data:1", "extra": 1},
        {"type": "resource_access"},
        {"type": "resource_access", "actions": []},
        {"type": "resource_access", "actions": ["a"], "locations": ["https://x/a/../b"]},
        {"type": "resource_access", "actions": ["a"], "locations": ["https://x/a%2fb"]},
        {"type": "resource_access", "actions": ["a"], "locations": ["https://x/a/..;/b"]},
        {"type": "resource_access", "actions": ["a"], "limits": {"max_amount": "5"}},
        {
            "type": "resource_access",
            "actions": ["a"],
            "limits": {"max_amount": "-5", "currency": "EUR"},
        },
        {
            "type": "resource_access",
            "actions": ["a"],
            "limits": {"max_amount": "1", "currency": "eur"},
        },
        {"type": "resource_access", "actions": ["a"], "limits": {"max_calls": 0}},
        {"type": "resource_access", "actions": ["a"], "limits": {"not_before": 5, "not_after": 5}},
        {"type": "resource_access", "actions": ["a"], "limits": {"not_after": "tomorrow"}},
        {"type": "resource_access", "actions": ["a"], "limits": {"cap": 1}},
        {"type": "1bad"},
        "scope",
    ],
)
def test_malformed_grants_are_refused(raw: object) -> None:
    with pytest.raises(g.GrantError):
        g.parse_detail(raw)


def test_locations_with_dot_segments_are_never_allowed() -> None:
    grant = g.parse_detail(
        {
            "type": "resource_access",
            "actions": ["pay"],
            "locations": ["https://pay.example/payees/P"],
        }
    )
    for sneaky in (
        "https://pay.example/payees/P/../Q",
        "https://pay.example/payees/P/%2e%2e/Q",
        "https://pay.example/payees/PQ",
        "https://pay.example/payees/P//x",
        "https://pay.example/payees/P/..;/Q",
        "https://pay.example/payees/P/..;jsessionid=1/Q",
        "https://pay.example/payees/P/.;/x",
        "https://pay.example/payees/P/%2e%2e%3b/Q",
    ):
        assert gu.allows([grant], "resource_access", now=0, action="pay", location=sneaky) is None
    assert (
        gu.allows(
            [grant],
            "resource_access",
            now=0,
            action="pay",
            location="https://pay.example/payees/P/x",
        )
        is not None
    )


def test_plain_scopes_travel_apart_from_limited_ones() -> None:
    plain, rest = g.plain_scopes(
        [
            g.scope_grant("read:data:1"),
            g.parse_detail({"type": "scope", "scope": "write:pay:*", "limits": {"max_calls": 3}}),
        ]
    )
    assert plain == ("read:data:1",)
    assert rest[0]["limits"] == {"max_calls": 3}
    # A limited scope grant never covers the plain scope (which would have no limit).
    assert not g.covers(rest[0], g.scope_grant("write:pay:1"))
    assert g.covers(g.scope_grant("write:pay:*"), rest[0])


@given(st.lists(grants(), max_size=4), st.lists(st.sampled_from(SCOPES), max_size=2))
def test_a_scope_is_as_critical_in_a_limited_grant_as_in_the_scope_claim(
    held: list[dict[str, Any]], patterns: list[str]
) -> None:
    """Limits move a scope from the scope claim into authorization_details; they must not
    move it out of ``critical_scopes``' reach."""
    plain, rest = g.plain_scopes(held)
    every = [grant["scope"] for grant in held if grant["type"] == "scope"]
    expected = scopes.overlaps(every, patterns)
    assert g.holds_critical_scope(plain, rest, patterns) is expected
    assert g.holds_critical_scope(every, (), patterns) is expected


def test_only_scope_grants_can_hold_a_critical_scope() -> None:
    patterns = ("write:pay:*",)
    limited = g.parse_detail({"type": "scope", "scope": "write:pay:1", "limits": {"max_calls": 1}})
    assert g.holds_critical_scope((), (limited,), patterns)
    assert not g.holds_critical_scope((), (limited,), ())
    # Another type's members are never read as scopes, whatever they hold.
    other = g.parse_detail({"type": "region_access", "scope": "write:pay:1"})
    assert not g.holds_critical_scope(("read:data:1",), (other,), patterns)


def test_a_call_value_matches_a_listed_value_of_its_own_json_type_only() -> None:
    """``true``, ``1`` and ``1.0`` are three JSON values (Python's ``==`` takes them for
    one): a limit that lists the integer 1 allows neither ``true`` nor ``1.0``, in
    ``allowed_values`` and in a grant's list fields alike."""
    granted = g.parse_details(
        [
            {
                "type": "resource_access",
                "actions": ["pay"],
                "limits": {"allowed_values": {"account": [1, "x"]}},
            }
        ]
    )
    seen = {
        repr(value): gu.allows(
            granted, "resource_access", action="pay", now=0, values={"account": value}
        )
        is not None
        for value in (1, True, 1.0, "1", "x", 0, False)
    }
    assert seen == {
        "1": True,
        "True": False,
        "1.0": False,
        "'1'": False,
        "'x'": True,
        "0": False,
        "False": False,
    }


def test_a_single_string_member_is_equal_or_nothing_never_a_substring() -> None:
    """An operator's type may declare ``actions`` as one string: a call's action must be
    that string, not a part of it."""
    granted = [g.parse_detail({"type": "ops", "actions": "unsubscribe"})]
    assert gu.allows(granted, "ops", action="subscribe", now=0) is None
    assert gu.allows(granted, "ops", action="unsub", now=0) is None
    assert gu.allows(granted, "ops", action="unsubscribe", now=0) is not None
    numbered = [g.parse_detail({"type": "ops", "actions": 7})]
    assert gu.allows(numbered, "ops", action="7", now=0) is None  # refused, not a TypeError


def test_a_subset_member_narrows_only_to_values_of_the_parents_json_type() -> None:
    """A ``subset`` member of a delegated grant may list only values its parent lists, as
    the resource side compares them: ``true`` and ``1.0`` are not the integer 1, so a
    parent that allows ``regions`` 1 does not cover a child that allows ``true``."""
    parent = g.parse_detail({"type": "region_access", "regions": [1, {"id": 2}]})
    for widened in ([True], [1.0], [{"id": True}], [{"id": 2.0}]):
        child = g.parse_detail({"type": "region_access", "regions": widened})
        assert not g.covers(parent, child, RULES), widened
        assert g.uncovered([child], [parent], RULES) == [child]
        # What the child would allow that its parent does not:
        call = {"regions": widened[0]}
        assert gu.allows([child], "region_access", now=0, fields=call) is not None
        assert gu.allows([parent], "region_access", now=0, fields=call) is None
    same = g.parse_detail({"type": "region_access", "regions": [{"id": 2}, 1]})
    assert g.covers(parent, same, RULES)


def test_the_members_a_call_may_state_are_what_allows_weighs_and_the_route_reads() -> None:
    """One list of a call's members serves the resource side's rule, the broker's counting
    route and the verifier: a member ``allows`` gains is read and accepted by all."""
    import inspect

    from tasklease.http.wire import CallCountRequest

    weighed = set(inspect.signature(gu.allows).parameters) - {"grants", "kind", "now"}
    assert set(gu.CALL_MEMBERS) == weighed
    assert set(gu.CALL_MEMBERS) <= set(CallCountRequest.__struct_fields__)
