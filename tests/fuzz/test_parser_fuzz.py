"""The scope parser (rules/scopes.py) and the SPIFFE ID parser (core/spiffe.py) under
arbitrary input: they never raise, and what they accept is exactly what they print."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklease.core.errors import InvalidRequest
from tasklease.core.spiffe import (
    AgentId,
    new_agent_id,
    parse_agent_id,
    validate_segment,
    validate_trust_domain,
)
from tasklease.rules.scopes import MAX_SCOPE_LENGTH, covers, is_subset, parse_scope, uncovered

FUZZ = settings(max_examples=300, deadline=None)

# Text that often looks like a scope or an ID: their separators and alphabets, and the
# rest of Unicode now and then.
_near = st.text(alphabet=st.sampled_from(":*/.-_ ,\t\x00aZ09") | st.characters(), max_size=40)
_segment = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=20)
_domain = st.text(alphabet=string.ascii_lowercase + string.digits + "._-", min_size=1, max_size=20)


@FUZZ
@given(_near | st.text(max_size=300))
def test_parse_scope_never_raises_and_splits_exactly(scope: str) -> None:
    parsed = parse_scope(scope)
    if parsed is None:
        return
    assert ":".join(parsed) == scope
    assert all(parsed) and len(scope) <= MAX_SCOPE_LENGTH
    assert "*" not in parsed[0] + parsed[1]
    assert parsed[2] == "*" or "*" not in parsed[2]
    assert covers(scope, scope)


@FUZZ
@given(allowed=st.lists(_near, max_size=4), requested=st.lists(_near, max_size=4))
def test_coverage_never_raises_and_agrees(allowed: list[str], requested: list[str]) -> None:
    left = uncovered(requested, allowed)
    assert is_subset(requested, allowed) is (not left)
    for scope in left:
        assert not any(covers(a, scope) for a in allowed)
    for scope in requested:
        if scope not in left:
            assert parse_scope(scope) is not None


@FUZZ
@given(allowed=_near, requested=_near)
def test_a_scope_covers_only_its_own_action_and_resource(allowed: str, requested: str) -> None:
    if covers(allowed, requested):
        a, r = parse_scope(allowed), parse_scope(requested)
        assert a is not None and r is not None
        assert a[:2] == r[:2]
        assert a[2] in ("*", r[2])


@FUZZ
@given(
    st.text(max_size=300)
    | st.builds(
        lambda parts: "spiffe://" + "/".join(parts),
        st.lists(_near | _segment | st.just("agent"), min_size=1, max_size=6),
    )
)
def test_parse_agent_id_never_raises_and_round_trips(value: str) -> None:
    parsed = parse_agent_id(value)
    if parsed is not None:
        assert str(parsed) == value
        assert parse_agent_id(str(parsed)) == parsed


@FUZZ
@given(domain=_domain, orch=_segment, task=_segment)
def test_new_agent_ids_parse_back(domain: str, orch: str, task: str) -> None:
    if orch in (".", "..") or task in (".", ".."):
        return
    agent = new_agent_id(validate_trust_domain(domain), orch, task)
    assert parse_agent_id(str(agent)) == agent
    assert isinstance(agent, AgentId)


@FUZZ
@given(st.none() | st.integers() | st.binary(max_size=8) | _near | _segment)
def test_validate_segment_accepts_or_raises_invalid_request(value: object) -> None:
    try:
        assert validate_segment(value, field="task_id") == value
    except InvalidRequest:
        return
    assert isinstance(value, str)
    assert parse_agent_id(f"spiffe://td/agent/{value}/{value}/{value}") is not None


@pytest.mark.parametrize("value", [".", "..", "", "a/b", "a" * 129])
def test_validate_segment_refuses_the_edges(value: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_segment(value, field="orch_id")
