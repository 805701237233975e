"""The exact edges of narrowing, one example each: what a property test may never draw.

Each case names the one comparison that keeps a narrower credential from holding more
than its parent (or a meet of two ceilings from holding more than either).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tasklease.rules import grants as g
from tasklease.rules import grantuse as gu
from tasklease.rules import scopes


def _pay(**limits: Any) -> dict[str, Any]:
    return g.parse_detail({"type": "resource_access", "actions": ["pay"], "limits": limits})


# --- scopes: the meet of two ceilings ----------------------------------------------------


def test_the_meet_of_two_different_identifiers_is_empty() -> None:
    """``read:data:1`` and ``read:data:2`` share nothing: neither may survive the meet."""
    assert scopes.intersect(("read:data:1",), ("read:data:2",)) == ()
    assert scopes.intersect(("read:data:2",), ("read:data:1",)) == ()


def test_the_meet_never_crosses_resources() -> None:
    """A wildcard over one resource does not meet a scope of another with the same action."""
    assert scopes.intersect(("read:data:*",), ("read:users:1",)) == ()
    assert scopes.intersect(("read:users:1",), ("read:data:*",)) == ()
    assert scopes.intersect(("read:data:*",), ("read:data:7",)) == ("read:data:7",)


def test_a_wildcard_scope_is_critical_when_it_covers_a_critical_pattern() -> None:
    """``write:payments:*`` holds ``write:payments:acct-1``: a critical pattern naming one
    account makes the wildcard critical too, not only the scopes the pattern covers."""
    assert scopes.overlaps(["write:payments:*"], ["write:payments:acct-1"])
    assert scopes.overlaps(["write:payments:acct-1"], ["write:payments:*"])
    assert not scopes.overlaps(["write:payments:acct-2"], ["write:payments:acct-1"])


# --- grant limits -------------------------------------------------------------------------


def test_an_amount_limit_never_changes_currency() -> None:
    """100 EUR does not cover 100 USD (nor 100 JPY cover 100 KWD): the amount is in the
    parent's currency or it is no narrowing at all."""
    parent = _pay(max_amount="100", currency="EUR")
    assert g.covers(parent, _pay(max_amount="100", currency="EUR"))
    assert not g.covers(parent, _pay(max_amount="100", currency="USD"))
    assert not g.covers(parent, _pay(max_amount="1", currency="USD"))


def test_a_child_must_keep_its_parents_call_limit() -> None:
    """A parent's ``max_calls`` binds the child: leaving it out is no narrowing, one call
    more is a widening, the same or fewer is allowed."""
    parent = _pay(max_calls=3)
    assert not g.covers(parent, _pay(not_before=0))
    assert not g.covers(parent, _pay(max_calls=4))
    assert g.covers(parent, _pay(max_calls=3))
    assert g.covers(parent, _pay(max_calls=1))


def test_a_child_window_stays_inside_its_parents_to_the_second() -> None:
    """A window of [1000, 2000): a child may keep either end or move it inward; leaving an
    end out, or moving it one second outward, is a widening."""
    parent = _pay(not_before=1000, not_after=2000)
    assert g.covers(parent, _pay(not_before=1000, not_after=2000))
    assert g.covers(parent, _pay(not_before=1001, not_after=1999))
    assert not g.covers(parent, _pay(not_before=999, not_after=2000))
    assert not g.covers(parent, _pay(not_before=1000, not_after=2001))
    assert not g.covers(parent, _pay(not_after=2000))
    assert not g.covers(parent, _pay(not_before=1000))


def test_a_child_keeps_every_field_its_parent_restricts_to_allowed_values() -> None:
    """A parent's ``allowed_values`` binds each field it names: a child that leaves the
    field out (or every allowed value out) may call with any value, a widening."""
    parent = _pay(allowed_values={"region": ["eu"]})
    assert not g.covers(parent, _pay(max_calls=5))
    assert not g.covers(parent, _pay(allowed_values={"tier": ["gold"]}))
    assert not g.covers(parent, _pay(allowed_values={"region": ["eu", "us"]}))
    assert g.covers(parent, _pay(allowed_values={"region": ["eu"], "tier": ["gold"]}))


def test_a_child_amount_may_equal_but_not_pass_its_parents() -> None:
    parent = _pay(max_amount="100", currency="EUR")
    assert g.covers(parent, _pay(max_amount="100", currency="EUR"))
    assert not g.covers(parent, _pay(max_amount="100.0001", currency="EUR"))


def test_a_grant_window_opens_at_not_before_and_closes_at_not_after() -> None:
    """``not_before`` is inclusive and ``not_after`` exclusive, to the second."""
    grant = _pay(not_before=1000, not_after=2000)
    assert gu.allows([grant], "resource_access", now=999, action="pay") is None
    assert gu.allows([grant], "resource_access", now=1000, action="pay") == grant
    assert gu.allows([grant], "resource_access", now=1999, action="pay") == grant
    assert gu.allows([grant], "resource_access", now=2000, action="pay") is None


def test_an_amount_is_allowed_up_to_its_limit_in_its_currency_only() -> None:
    grant = _pay(max_amount="100", currency="EUR")

    def pay(amount: str, currency: str) -> object:
        return gu.allows(
            [grant], "resource_access", now=0, action="pay", amount=amount, currency=currency
        )

    assert pay("100", "EUR") == grant
    assert pay("100.01", "EUR") is None
    assert pay("1", "USD") is None
    assert pay("-1", "EUR") is None


# --- resource_access members --------------------------------------------------------------


def _access(**members: Any) -> dict[str, Any]:
    return g.parse_detail({"type": "resource_access", "actions": ["read"], **members})


def test_a_parents_identifier_binds_its_child() -> None:
    parent = _access(identifier="acct-1")
    assert g.covers(parent, _access(identifier="acct-1"))
    assert not g.covers(parent, _access(identifier="acct-2"))
    assert not g.covers(parent, _access())


def test_a_location_covers_only_itself_and_what_is_below_it() -> None:
    """``https://pay.example/payees`` covers ``.../payees/P``, not ``.../payeesX``."""
    parent = _access(locations=["https://pay.example/payees"])
    assert g.covers(parent, _access(locations=["https://pay.example/payees/P"]))
    assert not g.covers(parent, _access(locations=["https://pay.example/payeesX"]))
    assert not g.covers(parent, _access())
    assert not g.location_covers("https://pay.example/payees", "https://pay.example/payeesX")


def test_a_parents_datatypes_and_privileges_bind_its_child() -> None:
    for name in ("datatypes", "privileges"):
        parent = _access(**{name: ["invoice"]})
        assert g.covers(parent, _access(**{name: ["invoice"]}))
        assert not g.covers(parent, _access(**{name: ["invoice", "card"]}))
        assert not g.covers(parent, _access())


# --- an operator's type ---------------------------------------------------------------------

_REGION = {
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


def _region(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "region_access",
        "regions": ["eu", "us"],
        "rows": 100,
        "path": "/data",
        "rating": 3,
        "team": "ops",
        "where": "/data",
    }
    return g.parse_detail({**base, **members})


@pytest.mark.parametrize(
    "members",
    [
        {"regions": ["eu", "apac"]},
        {"rows": 101},
        {"path": "/dat"},
        {"rating": 2},
        {"team": "dev"},
        {"where": "/datax"},
    ],
    ids=["subset", "at_most", "prefix", "at_least", "equal", "path"],
)
def test_each_narrowing_operator_refuses_one_step_wider(members: dict[str, Any]) -> None:
    parent = _region()
    assert g.covers(parent, _region(), _REGION)
    narrower = _region(regions=["eu"], rows=100, path="/data/x", rating=3, where="/data/x")
    assert g.covers(parent, narrower, _REGION)
    assert not g.covers(parent, _region(**members), _REGION)


@pytest.mark.parametrize("member", ["regions", "rows", "path", "rating", "team", "where"])
def test_a_member_the_parent_sets_the_child_cannot_leave_out(member: str) -> None:
    child = {k: v for k, v in _region().items() if k != member}
    assert not g.covers(_region(), child, _REGION)


def test_an_operators_type_without_a_rule_covers_only_itself() -> None:
    assert g.covers(_region(), _region())
    assert not g.covers(_region(), _region(rows=1))
    assert not g.covers(_region(), _region(rows=True), _REGION)  # a bool is not a number


@pytest.mark.parametrize(
    "child",
    [
        "/data-archive",
        "/data/../secrets",
        "/data/x/..",
        "/data/./x",
        "/data/..;/secrets",
        "/data%2f..%2fsecrets",
        "/data/%2e%2e/secrets",
        "/data//x",
        "/data/x?y=1",
        "/data/x#y",
        "/data\\..\\secrets",
    ],
)
def test_a_path_member_covers_no_sibling_and_no_way_out(child: str) -> None:
    """``path`` reads the member as ``locations`` are read: below the parent at a ``/``,
    never through a dot segment or an encoded separator. ``prefix`` compares characters,
    and covers what ``path`` refuses: that is why ``path`` exists."""
    parent = _region()
    assert g.covers(parent, _region(where="/data/x/y"), _REGION)
    assert not g.covers(parent, _region(where=child), _REGION)
    if child.startswith("/data"):
        assert g.covers(parent, _region(path=child), _REGION)


def test_a_path_member_ending_in_a_slash_covers_what_is_below_it() -> None:
    parent = _region(where="/data/")
    assert g.covers(parent, _region(where="/data/"), _REGION)
    assert g.covers(parent, _region(where="/data/x"), _REGION)
    assert not g.covers(parent, _region(where="/data"), _REGION)
    assert not g.covers(parent, _region(where=["/data/x"]), _REGION)  # not a string


# Would fail if: comparing a delegation's grants with its parent's ran the location check
# (a regular expression over up to 512 characters) once per pair of locations rather than
# once per location: a 1 MB body to POST /v1/delegate held the broker for seconds.
def test_covering_many_long_locations_checks_each_location_once() -> None:
    """32 child grants of 64 long locations each against 64 parent locations: each child
    location is compared with every parent location (the last one is covered by none, so
    no comparison stops early), and the text check that refuses dot segments and
    encoded separators runs once per location, not once per comparison."""
    actions = [f"a{i}" for i in range(64)]
    parent = g.parse_detail(
        {
            "type": "resource_access",
            "actions": actions,
            "locations": [f"https://h.example/{i}" for i in range(64)],
        }
    )
    long_tail = "x" * 480
    locations = [f"https://h.example/63/{long_tail}{i}" for i in range(63)]
    children = [
        g.parse_detail(
            {
                "type": "resource_access",
                "actions": [action],
                "locations": [*locations, "https://elsewhere.example/"],
            }
        )
        for action in actions[:32]
    ]
    started = time.perf_counter()
    assert len(g.uncovered(children, [parent])) == 32
    assert time.perf_counter() - started < 0.5
    # The same answers as before, one location at a time.
    assert g.location_covers("https://h.example/63", locations[0])
    assert not g.location_covers("https://h.example/6", locations[0])
    assert not g.location_covers("https://h.example/63", "https://h.example/63/a/../b")
    assert not g.location_covers("https://h.example/63/a/../b", "https://h.example/63/a/../b")
