"""Scope grammar, coverage and the no-widening property of the whole broker."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasklease.core.errors import InvalidRequest, ScopeViolation, TaskleaseError
from tasklease.core.scopes import scope_param, validate_scopes
from tasklease.rules.scopes import (
    MAX_SCOPE_LENGTH,
    MAX_SCOPES,
    covers,
    is_subset,
    parse_scope,
    uncovered,
)

# --- grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "parts"),
    [
        ("read:data:42", ("read", "data", "42")),
        ("read:data:*", ("read", "data", "*")),
        ("read:data:customers:42", ("read", "data", "customers:42")),
        ("read:data::", ("read", "data", ":")),
        ("a:b:c", ("a", "b", "c")),
        ("write:logs:a/b.c-d_e", ("write", "logs", "a/b.c-d_e")),
    ],
)
def test_parse_scope_accepts(scope: str, parts: tuple[str, str, str]) -> None:
    assert parse_scope(scope) == parts


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "read",
        "read:data",
        ":data:42",
        "read::42",
        "read:data:",
        "::",
        "*:data:42",
        "read:*:42",
        "*:*:*",
        "read:data:4*",
        "read:data:*42",
        "read:data:**",
        "read:data:a:*",
        "read:data:4 2",
        " read:data:42",
        "read:data:42\n",
        "read:data:4\t2",
        "read:data:4,2",
        "read:data:42,write:data:42",
        "read:data:4\x002",
        "read:data:4\x072",
        "read:data:4\x852",  # NEL: str.split() splits on it
        "read:data:4\xa02",  # no-break space
        "read:data:4\u30002",  # ideographic space
        "read:data:4\u20282",  # line separator
        "read:data:4\u200b2",  # zero-width space: reads as read:data:42
        "read:data:" + "x" * (MAX_SCOPE_LENGTH - len("read:data:") + 1),
    ],
)
def test_parse_scope_rejects(scope: str) -> None:
    assert parse_scope(scope) is None
    assert not covers(scope, scope)
    with pytest.raises(InvalidRequest):
        validate_scopes([scope], field="requested_scope")


def test_length_cap_is_inclusive() -> None:
    at_cap = "read:data:" + "x" * (MAX_SCOPE_LENGTH - len("read:data:"))
    assert len(at_cap) == MAX_SCOPE_LENGTH
    assert parse_scope(at_cap) is not None
    assert parse_scope(at_cap + "x") is None


def test_an_over_long_scope_is_not_remembered() -> None:
    # The token endpoint reads ``scope`` before it authenticates anyone, and a refusal for
    # a malformed scope is not audited, so it spends no refusal budget: an anonymous
    # caller sends as many as it likes, each up to the body limit. What the parser
    # remembers must stay small whatever it is sent (each entry a scope of at most
    # MAX_SCOPE_LENGTH characters), never a copy of every megabyte it was sent.
    sent = ["read:data:" + f"{i:04d}" + "x" * 100_000 for i in range(32)]
    before = [sys.getrefcount(scope) for scope in sent]
    for scope in sent:
        assert parse_scope(scope) is None
        with pytest.raises(InvalidRequest):
            scope_param(scope)
    del scope
    gc.collect()  # the refusals' tracebacks hold their frames until collected
    after = [sys.getrefcount(scope) for scope in sent]
    retained = sum(a > b for a, b in zip(after, before, strict=True))
    assert retained == 0


# --- covers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "requested", "expected"),
    [
        ("read:data:42", "read:data:42", True),
        ("read:data:*", "read:data:42", True),
        ("read:data:*", "read:data:customers:42", True),
        ("read:data:*", "read:data:*", True),
        ("read:data:42", "read:data:*", False),
        ("read:data:42", "read:data:43", False),
        ("read:data:customers", "read:data:customers:42", False),
        ("read:data:*", "write:data:42", False),
        ("read:data:*", "read:logs:42", False),
        ("*:*:*", "read:data:42", False),
        ("*:*:*", "*:*:*", False),
        ("read:data:*", "read:data:4*", False),
        ("read:data:4*", "read:data:42", False),
        ("read:data:*", "", False),
        ("", "read:data:42", False),
    ],
)
def test_covers(allowed: str, requested: str, expected: bool) -> None:
    assert covers(allowed, requested) is expected


def test_is_subset_and_uncovered() -> None:
    allowed = ["read:data:*", "write:logs:7"]
    assert is_subset([], allowed)
    assert is_subset(["read:data:1", "read:data:2", "write:logs:7"], allowed)
    assert not is_subset(["read:data:1", "write:logs:8"], allowed)
    assert uncovered(["read:data:1", "write:logs:8", "x:y:z"], allowed) == [
        "write:logs:8",
        "x:y:z",
    ]
    assert not is_subset(["read:data:1"], [])


# --- validate_scopes ---------------------------------------------------------------------


def test_validate_scopes_dedups_in_order() -> None:
    got = validate_scopes(["b:b:b", "a:a:a", "b:b:b"], field="scope")
    assert got == ("b:b:b", "a:a:a")
    assert validate_scopes(("a:a:a",), field="scope") == ("a:a:a",)


@pytest.mark.parametrize(
    "value",
    [None, [], (), "read:data:1", {"read:data:1"}, {"a": "read:data:1"}, 42, [42], [None]],
)
def test_validate_scopes_wrong_shape_names_field(value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_scopes(value, field="allowed_scope")
    assert "allowed_scope" in info.value.detail
    assert info.value.code == "invalid_request"


def test_validate_scopes_bad_scope_names_field_and_scope() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_scopes(["read:data:1", "read:data"], field="requested_scope")
    assert "requested_scope" in info.value.detail
    assert "read:data" in info.value.detail
    # A long bad value is not echoed back.
    with pytest.raises(InvalidRequest) as info:
        validate_scopes(["x" * 300], field="scope")
    assert "x" * 65 not in info.value.detail
    assert "scope" in info.value.detail


def test_validate_scopes_count_cap() -> None:
    many = [f"read:data:{i}" for i in range(MAX_SCOPES)]
    assert len(validate_scopes(many, field="scope")) == MAX_SCOPES
    with pytest.raises(InvalidRequest) as info:
        validate_scopes([*many, "read:data:x"], field="scope")
    assert "scope" in info.value.detail


# --- properties --------------------------------------------------------------------------

ACTIONS = ["read", "write"]
RESOURCES = ["data", "logs"]
IDENTIFIERS = ["1", "2", "a:b", "*"]

small_scope = st.builds(
    lambda a, r, i: f"{a}:{r}:{i}",
    st.sampled_from(ACTIONS),
    st.sampled_from(RESOURCES),
    st.sampled_from(IDENTIFIERS),
)
# Anything at all, to make sure malformed input never sneaks into a coverage chain.
any_scope = st.one_of(
    small_scope,
    st.text(alphabet=st.sampled_from(list("rw:*d1 ,a")), max_size=12),
)
scope_list = st.lists(small_scope, max_size=5)

PROPS = settings(max_examples=200, deadline=None, database=None)


@PROPS
@given(any_scope, any_scope, any_scope)
def test_covers_is_transitive(a: str, b: str, c: str) -> None:
    if covers(a, b) and covers(b, c):
        assert covers(a, c)


@PROPS
@given(any_scope, any_scope)
def test_covers_never_crosses_action_or_resource(a: str, b: str) -> None:
    if covers(a, b):
        pa, pb = parse_scope(a), parse_scope(b)
        assert pa is not None
        assert pb is not None
        assert pa[:2] == pb[:2]
        assert pa[2] in ("*", pb[2])


@PROPS
@given(scope_list)
def test_is_subset_is_reflexive(xs: list[str]) -> None:
    assert is_subset(xs, xs)


@PROPS
@given(scope_list, scope_list, scope_list)
def test_is_subset_is_transitive(xs: list[str], ys: list[str], zs: list[str]) -> None:
    if is_subset(xs, ys) and is_subset(ys, zs):
        assert is_subset(xs, zs)


# --- the headline property: no sequence of broker operations widens authority --------------

register_op = st.tuples(st.just("register"), st.lists(small_scope, min_size=1, max_size=3))
renew_op = st.tuples(st.just("renew"), st.integers(0, 50))
delegate_op = st.tuples(
    st.just("delegate"),
    st.integers(0, 50),
    st.integers(0, 50),
    st.lists(small_scope, min_size=1, max_size=3),
)
advance_op = st.tuples(st.just("advance"), st.integers(1, 120))
operations = st.lists(
    st.one_of(register_op, renew_op, delegate_op, advance_op), min_size=1, max_size=12
)


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ceiling=st.lists(small_scope, min_size=1, max_size=3), ops=operations)
def test_no_operation_sequence_escapes_the_launch_ceiling(
    make_broker: Any, kit: Any, ceiling: list[str], ops: list[tuple[Any, ...]]
) -> None:
    broker = make_broker(max_renewals=3)
    launch = kit.launch(broker, ceiling, single_use=False, ttl=3600)
    agents: list[str] = []
    held: list[Any] = []  # claims of every token still worth using

    def check(issued: Any, bound: tuple[str, ...]) -> None:
        # What the broker signed, not merely what it says it signed.
        signed = broker.validate(issued.token)
        assert signed.scope == issued.claims.scope
        assert is_subset(signed.scope, ceiling), (signed.scope, ceiling)
        assert is_subset(signed.scope, bound), (signed.scope, bound)
        held.append(signed)

    # The ceiling itself is always grantable: the property is never vacuous.
    args, _ = kit.register_args(broker, launch, ceiling)
    first = broker.register(**args)
    check(first, tuple(ceiling))
    agents.append(first.claims.sub)

    for op in ops:
        if op[0] == "register":
            args, _ = kit.register_args(broker, launch, op[1])
            if is_subset(op[1], ceiling):
                issued = broker.register(**args)  # a subset of the ceiling is always granted
                check(issued, tuple(op[1]))
                agents.append(issued.claims.sub)
            else:
                with pytest.raises(ScopeViolation):
                    broker.register(**args)
        elif op[0] == "advance":
            broker.clock.advance(op[1])
        elif op[0] == "renew":
            old = held[op[1] % len(held)]
            try:
                issued = broker.renew(old, kit.ctx)
            except TaskleaseError:
                continue  # already renewed, count limit, ceiling: refusals are fine
            check(issued, old.scope)
            assert issued.claims.scope == old.scope
        else:
            delegator = held[op[1] % len(held)]
            target = agents[op[2] % len(agents)]
            in_chain = target == delegator.sub or any(
                r.agent == target for r in delegator.delegation_chain
            )
            try:
                issued = broker.delegate(
                    delegator,
                    delegate_to=target,
                    scope=op[3],
                    ttl=None,
                    ctx=kit.ctx,
                )
            except ScopeViolation:
                # Widening, the depth limit, or a cycle (the delegate already in the chain).
                assert not is_subset(op[3], delegator.scope) or delegator.depth >= 5 or in_chain
                continue
            except TaskleaseError:
                continue
            assert is_subset(op[3], delegator.scope)
            check(issued, delegator.scope)
    # Anything still valid at the end is also within the ceiling.
    for claims in held:
        assert is_subset(claims.scope, ceiling)


def test_register_outside_ceiling_is_refused_even_with_wildcards(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker()
    launch = kit.launch(broker, ["read:data:1"], single_use=False)
    for requested in (["read:data:*"], ["read:data:1", "read:logs:1"], ["write:data:1"]):
        args, _ = kit.register_args(broker, launch, requested)
        with pytest.raises(ScopeViolation):
            broker.register(**args)


def test_a_scope_never_reads_as_two_to_a_whitespace_splitter(make_broker: Any, kit: Any) -> None:
    """RFC 6749's scope tokens are printable ASCII without spaces, and many resource
    servers read a token's ``scope`` claim with ``str.split()``, which splits on every
    Unicode space. A single scope with an ideographic space in its identifier, covered by
    ``read:data:*``, would read there as ``write:pay:acct-9`` too: it is refused instead."""
    broker = make_broker()
    launch = kit.launch(broker, ["read:data:*"], single_use=False)
    smuggled = "read:data:x\u3000write:pay:acct-9"
    assert "write:pay:acct-9" in smuggled.split()  # what such a resource server would see
    args, _ = kit.register_args(broker, launch, [smuggled])
    with pytest.raises(InvalidRequest):
        broker.register(**args)
