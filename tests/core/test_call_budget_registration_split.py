# Would fail if: a registration could split its ceiling's counted grant into several
# grants, each within the ceiling, and make the ceiling's max_calls with each of them.
"""A registration's counted grants draw on their ceiling's budget (core.calls).

A launch token (or an attestor's policy) grants ``max_calls`` calls; a registration may
ask for grants narrower than it. Each such grant had a budget of its own and nothing
above it, so asking for two disjoint grants of the ceiling's ``max_calls`` each made twice
the calls the launch token allowed. Each registration now has its ceiling's budget too,
in a thread of its own, above every grant it asked for: the grants make no more calls
between them than the ceiling grant allowed (each registration of a multi-use launch
token still has its own, decision 97)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.core.test_call_budget_threads import launched, registered

from tasklease.core.errors import Forbidden


def _read(location: str, calls: int) -> dict[str, Any]:
    return {
        "type": "resource_access",
        "actions": ["read"],
        "locations": [location],
        "limits": {"max_calls": calls},
    }


def _count(broker: Any, kit: Any, token: str, path: str) -> bool:
    try:
        broker.count_call(
            token,
            kind="resource_access",
            call={"action": "read", "location": f"https://rs.example/{path}/x"},
            audience=None,
            presented=None,
            ctx=kit.ctx,
        )
    except Forbidden:
        return False
    return True


def test_grants_split_from_a_counted_ceiling_share_its_calls(broker: Any, kit: Any) -> None:
    launch = launched(broker, kit, [_read("https://rs.example/", 3)])
    agent = registered(
        broker,
        kit,
        launch,
        "t-split",
        [_read("https://rs.example/a/", 3), _read("https://rs.example/b/", 3)],
    )
    made = [_count(broker, kit, agent.token, p) for p in ("a", "a", "b", "b", "a", "b")]
    assert made.count(True) == 3
    assert made[:3] == [True, True, True]


def test_each_registration_of_a_multi_use_launch_token_keeps_its_own_ceiling(
    broker: Any, kit: Any
) -> None:
    launch = launched(broker, kit, [_read("https://rs.example/", 2)])
    first = registered(broker, kit, launch, "t-one", [_read("https://rs.example/a/", 2)])
    second = registered(broker, kit, launch, "t-two", [_read("https://rs.example/a/", 2)])
    assert [_count(broker, kit, first.token, "a") for _ in range(3)] == [True, True, False]
    assert [_count(broker, kit, second.token, "a") for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("calls", [1, 2])
def test_the_ceiling_grant_itself_counts_as_before(broker: Any, kit: Any, calls: int) -> None:
    grant = _read("https://rs.example/", calls)
    agent = registered(broker, kit, launched(broker, kit, [grant]), f"t-same-{calls}", [grant])
    made = [_count(broker, kit, agent.token, "a") for _ in range(calls + 1)]
    assert made == [True] * calls + [False]
