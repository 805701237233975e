"""Structured grants through the kernel: launch tokens, registration, delegation, renewal,
resumption, RFC 8693 narrowing and app ceilings; operators' grant types; call budgets;
issuance decided by Cedar policies, named in the audit log."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tasklease.core.audit import deferring
from tasklease.core.errors import (
    Conflict,
    Forbidden,
    InsufficientScope,
    InvalidAuthorizationDetails,
    InvalidRequest,
    NotFound,
    ScopeViolation,
)
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.introspection import is_reference_token
from tasklease.core.policy import DEFAULT_POLICY, PolicyError, compile_policies
from tasklease.core.store import AuditQuery
from tasklease.rules import grants as g

DAY = 86400
NOON = 1_800_000_000  # the test clock's start: today, 08:00 UTC
TODAY = NOON - NOON % DAY
PAYEE = "https://pay.example/payees/"
PAY_80 = {  # a call that pay("500") (or a narrower grant of 100) allows
    "action": "pay",
    "location": PAYEE + "P",
    "amount": "80",
    "currency": "EUR",
    "values": {"payee": "P"},
}


def pay(
    amount: str, payee: str = "P", start: int = TODAY, end: int = TODAY + DAY, **more: Any
) -> dict[str, Any]:
    return {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": [PAYEE + payee],
        "limits": {
            "max_amount": amount,
            "currency": "EUR",
            "not_before": start,
            "not_after": end,
            "allowed_values": {"payee": [payee]},
            **more,
        },
    }


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


def launch(
    broker: Any, kit: Any, details: list[dict[str, Any]], scope: list[str] | None = None, **kw: Any
) -> str:
    token, _ = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="payer",
        allowed_scope=scope or [],
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
        authorization_details=details,
        **kw,
    )
    return str(token)


def register(
    broker: Any,
    kit: Any,
    launch_token: str,
    details: list[dict[str, Any]],
    scope: list[str] | None = None,
    task: str = "task-1",
) -> Any:
    args, key = kit.register_args(broker, launch_token, scope or [], task_id=task)
    args["authorization_details"] = details
    if not scope:
        args["requested_scope"] = None
    return broker.register(**args)


@pytest.fixture
def payer(broker: Any, kit: Any) -> Any:
    """An agent holding "pay at most 500 EUR to payee P today", and one to delegate to."""
    lt = launch(broker, kit, [pay("500")], ["read:data:*"])
    holder = register(broker, kit, lt, [pay("500")], ["read:data:*"])
    other = register(broker, kit, lt, [], ["read:data:1"], task="task-2")
    return holder, other


def delegate(broker: Any, kit: Any, claims: Any, to: Any, details: list[dict[str, Any]]) -> Any:
    return broker.delegate(
        claims,
        delegate_to=to.claims.sub,
        scope=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=details,
    )


def test_the_payment_grant_narrows_and_never_widens(broker: Any, kit: Any, payer: Any) -> None:
    holder, other = payer
    assert holder.claims.details == (g.parse_detail(pay("500")),)
    assert holder.claims.raw["authorization_details"][0]["limits"]["max_amount"] == "500"
    child = delegate(broker, kit, holder.claims, other, [pay("100")])
    assert child.claims.details[0]["limits"]["max_amount"] == "100"
    assert child.claims.scope == ()
    for wider in (
        pay("600"),
        pay("100", payee="Q"),
        pay("100", start=TODAY + DAY, end=TODAY + 2 * DAY),
    ):
        with pytest.raises(ScopeViolation) as refused:
            delegate(broker, kit, holder.claims, other, [wider])
        assert refused.value.denial_id
        found = [
            e
            for e in events(broker, "delegation_attenuation_violation")
            if refused.value.denial_id in e.detail
        ]
        assert len(found) == 1 and "grants would widen" in found[0].detail
    # The refused delegations issued nothing; the allowed one names its deciding policy.
    (created,) = events(broker, "delegation_created")
    assert "policy=allow[issue-within-parent]" in created.detail
    assert "grants=resource_access#" in created.detail


def test_registration_stays_within_the_launch_token(broker: Any, kit: Any) -> None:
    lt = launch(broker, kit, [pay("500")])
    with pytest.raises(ScopeViolation):
        register(broker, kit, lt, [pay("501")])
    (violation,) = events(broker, "registration_policy_violation")
    assert "grants violation" in violation.detail and "policy=deny[]" in violation.detail
    agent = register(broker, kit, lt, [pay("20")])
    assert agent.claims.details[0]["limits"]["max_amount"] == "20"
    (registered,) = events(broker, "agent_registered")
    assert "policy=allow[issue-within-parent]" in registered.detail
    with pytest.raises(InvalidRequest):  # neither scope nor grants
        register(broker, kit, lt, [])


def test_renewal_and_resumption_keep_the_grants(broker: Any, kit: Any, payer: Any) -> None:
    holder, _ = payer
    renewed = broker.renew(holder.claims, kit.ctx)
    assert renewed.claims.details == holder.claims.details
    assert renewed.claims.scope == holder.claims.scope
    lt = launch(broker, kit, [pay("500")])
    args, key = kit.register_args(broker, lt, [])
    args.update(requested_scope=None, authorization_details=[pay("200")])
    agent = broker.register(**args)
    nonce, _ = broker.challenge()
    signature = base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode()
    resumed = broker.resume(
        agent_id=agent.claims.sub, nonce=nonce, signature=signature, ctx=kit.ctx
    )
    assert resumed.claims.details == agent.claims.details
    assert resumed.claims.details[0]["limits"]["max_amount"] == "200"


def test_malformed_or_unknown_grants_are_invalid_authorization_details(
    broker: Any, kit: Any
) -> None:
    for bad in ([{"type": "wire_transfer", "amount": 1}], [{"type": "resource_access"}], "x"):
        with pytest.raises(InvalidAuthorizationDetails):
            launch(broker, kit, bad)  # type: ignore[arg-type]


def test_scope_grants_with_limits_are_not_plain_scopes(broker: Any, kit: Any) -> None:
    limited = {"type": "scope", "scope": "write:payments:*", "limits": {"max_calls": 3}}
    lt = launch(broker, kit, [limited], ["read:data:*"])
    with pytest.raises(ScopeViolation):  # the plain scope would drop the limit
        register(broker, kit, lt, [], ["write:payments:1"])
    agent = register(broker, kit, lt, [{**limited, "scope": "write:payments:1"}])
    assert agent.claims.scope == ()
    assert agent.claims.details[0]["scope"] == "write:payments:1"


def test_app_ceiling_holds_grants(broker: Any, kit: Any) -> None:
    app, _ = broker.register_app(
        kit.admin(broker).claims,
        name="payments",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
        authorization_details=[pay("500")],
    )
    app_claims = kit.app(broker, app.app_id).claims
    ok, record = broker.create_launch_token(
        app_claims,
        agent_name="a",
        allowed_scope=[],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=[pay("300")],
    )
    assert record.authorization_details[0]["limits"]["max_amount"] == "300"
    with pytest.raises(Forbidden):
        broker.create_launch_token(
            app_claims,
            agent_name="a",
            allowed_scope=[],
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=kit.ctx,
            authorization_details=[pay("900")],
        )
    (exceeded,) = events(broker, "scope_ceiling_exceeded")
    assert "policy=deny[]" in exceeded.detail
    (issued,) = events(broker, "launch_token_issued")
    assert "policy=allow[app-launch-within-ceiling]" in issued.detail


def test_narrowing_by_token_exchange(broker: Any, kit: Any, payer: Any) -> None:
    holder, _ = payer
    request = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=holder.token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        authorization_details="[" + g.canonical(g.parse_detail(pay("50"))) + "]",
    )
    narrowed = broker.exchange_token(request, kit.ctx)
    assert narrowed.details[0]["limits"]["max_amount"] == "50"
    assert narrowed.scope == holder.claims.scope  # scope absent: kept
    wider = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=holder.token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        authorization_details=[pay("5000")],
    )
    with pytest.raises(InvalidAuthorizationDetails) as refused:
        broker.exchange_token(wider, kit.ctx)
    assert refused.value.denial_id


def test_large_grants_go_by_reference_and_introspect(make_broker: Any, kit: Any) -> None:
    broker = make_broker(reference_token_threshold=1024)
    many = [pay(str(100 + i), payee=f"P{i}") for i in range(6)]
    lt = launch(broker, kit, many)
    agent = register(broker, kit, lt, many)
    assert is_reference_token(agent.token)
    claims = broker.validate(agent.token)
    assert len(claims.details) == 6


def test_a_forbid_policy_decides_and_is_named(broker: Any, kit: Any) -> None:
    cap = """
@id("payments-need-prod")
forbid (principal, action == Action::"register", resource)
when { resource.actions.contains("pay") }
unless { principal.hasTag("cluster") && principal.getTag("cluster") == "prod" };
"""
    broker.policy.use(
        compile_policies([("default.cedar", DEFAULT_POLICY), ("cap.cedar", cap)], "test")
    )
    lt = launch(broker, kit, [pay("500")], ["read:data:*"])
    with pytest.raises(Forbidden) as refused:
        register(broker, kit, lt, [pay("100")])
    (denied,) = [
        e
        for e in events(broker, "registration_policy_violation")
        if refused.value.denial_id in e.detail
    ]
    assert "policy=deny[payments-need-prod]" in denied.detail
    plain = register(broker, kit, lt, [], ["read:data:1"])  # no payment: allowed
    assert plain.claims.scope == ("read:data:1",)


def test_a_broken_policy_is_refused_whole(broker: Any) -> None:
    with pytest.raises(PolicyError) as refused:
        compile_policies(
            [
                ("ok.cedar", DEFAULT_POLICY),
                (
                    "bad.cedar",
                    '@id("x") permit (principal, action, resource) when { resource.nope };',
                ),
            ],
            "test",
        )
    assert "x:" in str(refused.value)
    assert broker.policy.current.ids == (
        "app-launch-within-ceiling",
        "operator-launch",
        "issue-within-parent",
    )


def test_an_operators_grant_type(broker: Any, kit: Any) -> None:
    broker.grant_types.add(
        kit.admin(broker).claims,
        name="dataset_query",
        schema={
            "type": "object",
            "properties": {
                "type": {"const": "dataset_query"},
                "datasets": {"type": "array", "items": {"type": "string"}},
                "max_rows": {"type": "integer"},
            },
            "required": ["datasets"],
            "additionalProperties": False,
        },
        narrowing={"datasets": "subset", "max_rows": "at_most"},
        ctx=kit.ctx,
    )
    grant = {"type": "dataset_query", "datasets": ["sales", "hr"], "max_rows": 1000}
    lt = launch(broker, kit, [grant])
    agent = register(
        broker, kit, lt, [{"type": "dataset_query", "datasets": ["sales"], "max_rows": 10}]
    )
    assert agent.claims.details[0]["datasets"] == ["sales"]
    with pytest.raises(ScopeViolation):
        register(broker, kit, lt, [{"type": "dataset_query", "datasets": ["sales", "ops"]}])
    with pytest.raises(InvalidAuthorizationDetails):
        register(broker, kit, lt, [{"type": "dataset_query", "datasets": "sales"}])
    assert [t.name for t in broker.grant_types.list_types()] == ["dataset_query"]


@pytest.mark.parametrize(
    ("pattern", "kept"),
    [
        (r"^(a+)+$", False),
        (r"^(\w+\s?)*$", False),
        (r"^(x|(y+)+)$", False),
        (r"^[a-z0-9-]{1,64}$", True),
        (r"^[0-9]{1,12}(\.[0-9]{1,2})?$", True),
        (r"^(ab){2}$", True),
    ],
)
def test_a_grant_type_whose_pattern_backtracks_exponentially_is_refused(
    broker: Any, kit: Any, pattern: str, kept: bool
) -> None:
    """Grants are checked against a type's schema on the request's path: a pattern with a
    repeat inside a repeat lets an agent stall the broker with 25 characters."""
    schema = {
        "type": "object",
        "properties": {"type": {"const": "labelled"}, "label": {"pattern": pattern}},
    }

    def add() -> Any:
        return broker.grant_types.add(
            kit.admin(broker).claims, name="labelled", schema=schema, narrowing={}, ctx=kit.ctx
        )

    if kept:
        assert add().name == "labelled"
    else:
        with pytest.raises(InvalidRequest, match="repeats a repetition"):
            add()
        assert broker.grant_types.list_types() == []


def test_max_calls_are_counted_across_delegation(broker: Any, kit: Any, payer: Any) -> None:
    holder, other = payer
    lt = launch(broker, kit, [pay("500", max_calls=2)])
    parent = register(broker, kit, lt, [pay("500", max_calls=2)], task="task-3")
    child = delegate(broker, kit, parent.claims, other, [pay("100", max_calls=2)])
    call = PAY_80
    _, first = broker.count_call(
        child.token, kind="resource_access", call=call, audience=None, presented=None, ctx=kit.ctx
    )
    assert (first.counted, first.remaining, first.max_calls) == (True, 1, 2)
    _, second = broker.count_call(
        parent.token, kind="resource_access", call=call, audience=None, presented=None, ctx=kit.ctx
    )
    assert second.remaining == 0
    with pytest.raises(Forbidden) as spent:  # the child's own budget has one, its parent none
        broker.count_call(
            child.token,
            kind="resource_access",
            call=call,
            audience=None,
            presented=None,
            ctx=kit.ctx,
        )
    assert [e for e in events(broker, "grant_calls_exhausted") if spent.value.denial_id in e.detail]
    with pytest.raises(InsufficientScope):  # 600 EUR is no call the child's grant allows
        broker.count_call(
            child.token,
            kind="resource_access",
            call={**call, "amount": "600"},
            audience=None,
            presented=None,
            ctx=kit.ctx,
        )
    # A grant without max_calls allows the call uncounted.
    _, free = broker.count_call(
        holder.token, kind="resource_access", call=call, audience=None, presented=None, ctx=kit.ctx
    )
    assert free.counted is False


def test_counts_raced_for_the_last_call_count_it_once(broker: Any, kit: Any) -> None:
    # Checked on the event loop, both counts pass before either is written: the budget's
    # row decides, in the commit, and the loser is refused with one audited denial.
    lt = launch(broker, kit, [pay("500", max_calls=1)])
    agent = register(broker, kit, lt, [pay("500", max_calls=1)])
    call = PAY_80

    def counting() -> Any:
        return deferring(
            lambda: broker.prepare_count_call(
                agent.token,
                kind="resource_access",
                call=call,
                audience=None,
                presented=None,
                ctx=kit.ctx,
            )
        )

    first, second = counting(), counting()
    assert first.error is None and second.error is None

    async def both() -> list[Any]:
        return await asyncio.gather(
            broker.answer(first), broker.answer(second), return_exceptions=True
        )

    outcomes = asyncio.run(both())
    counted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(counted) == 1 and counted[0][1].remaining == 0, outcomes
    assert len(refused) == 1 and isinstance(refused[0], Forbidden), outcomes
    broker.audit.close()
    exhausted = [
        e for e in events(broker, "grant_calls_exhausted") if refused[0].denial_id in e.detail
    ]
    assert len(exhausted) == 1 and "its own budget" in exhausted[0].detail


def test_an_apps_current_grants_bound_its_registrations_under_each_types_rule(
    broker: Any, kit: Any
) -> None:
    # The app's ceiling is an ancestor's bound at registration (core.kernel): a narrower
    # grant of an operator's type stays within it by the type's rule, not only when equal.
    admin = kit.admin(broker).claims
    broker.grant_types.add(
        admin,
        name="dataset_query",
        schema={
            "type": "object",
            "properties": {
                "type": {"const": "dataset_query"},
                "datasets": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["datasets"],
            "additionalProperties": False,
        },
        narrowing={"datasets": "subset"},
        ctx=kit.ctx,
    )
    wide = {"type": "dataset_query", "datasets": ["sales", "hr"]}
    app, _ = broker.register_app(
        admin,
        name="analyst",
        scopes=[],
        token_ttl=None,
        ctx=kit.ctx,
        authorization_details=[wide, pay("500")],
    )
    lt, _ = broker.create_launch_token(
        kit.app(broker, app.app_id).claims,
        agent_name="a",
        allowed_scope=[],
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
        authorization_details=[{"type": "dataset_query", "datasets": ["sales"]}, pay("300")],
    )
    sales = {"type": "dataset_query", "datasets": ["sales"]}
    assert register(broker, kit, lt, [sales, pay("300")]).claims.details[0] == sales
    # The operator narrows the app's payments: the launch token's 300 now stops at 100.
    broker.update_app(
        admin,
        app.app_id,
        scopes=None,
        token_ttl=None,
        ctx=kit.ctx,
        authorization_details=[wide, pay("100")],
    )
    with pytest.raises(ScopeViolation):
        register(broker, kit, lt, [pay("300")], task="task-2")
    agent = register(broker, kit, lt, [sales, pay("100")], task="task-3")
    assert agent.claims.details[1]["limits"]["max_amount"] == "100"


def test_two_adds_of_one_grant_type_at_once_keep_the_first_rule(
    broker: Any, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both adds checked before either wrote (the name free to each): the second is
    refused when it writes, and the rule the first registered stays."""
    admin = kit.admin(broker).claims
    schema = {"type": "object", "properties": {"type": {"const": "rows"}}}
    monkeypatch.setattr(broker.store, "get_grant_type", lambda _name: None)
    first = broker.grant_types.add(
        admin, name="rows", schema=schema, narrowing={"max_rows": "at_most"}, ctx=kit.ctx
    )
    with pytest.raises(Conflict):
        broker.grant_types.add(admin, name="rows", schema=schema, narrowing={}, ctx=kit.ctx)
    monkeypatch.undo()
    assert broker.store.get_grant_type("rows") == first


def test_a_refused_grant_type_change_names_its_one_audit_event(broker: Any, kit: Any) -> None:
    """Adding a grant type that exists, or removing one that does not, is a refusal: a
    ``denial_id`` leading to exactly one ``grant_type_denied`` event naming the operator,
    as a refused change to an operator, a tenant or a federated domain is."""
    admin = kit.admin(broker).claims

    def add() -> Any:
        return broker.grant_types.add(
            admin, name="ticket", schema={"type": "object"}, narrowing={}, ctx=kit.ctx
        )

    add()
    refusals = []
    with pytest.raises(Conflict) as taken:
        add()
    refusals.append(taken.value)
    broker.grant_types.remove(admin, "ticket", kit.ctx)
    with pytest.raises(NotFound) as gone:
        broker.grant_types.remove(admin, "ticket", kit.ctx)
    refusals.append(gone.value)
    denied = broker.store.query_audit(AuditQuery(event_type="grant_type_denied", limit=10))[0]
    assert len(denied) == 2
    for refusal, event in zip(refusals, denied, strict=True):
        assert refusal.denial_id.startswith("den_")
        assert event.outcome == "denied"
        assert event.detail.endswith(f"denial={refusal.denial_id}")
        assert f"by={admin.sub}" in event.detail


@pytest.mark.parametrize(
    "value", [10**400, -(10**400), 2**53], ids=["huge", "huge_negative", "past_exact"]
)
def test_a_grant_integer_no_float_holds_is_refused_as_malformed(
    broker: Any, kit: Any, value: int
) -> None:
    """JSON integers are read exactly: a value of 400 digits checked against a type's
    ``multipleOf`` of a float overflowed in the schema check (a 500 on registration,
    delegation and narrowing). A grant's integers are those every JSON reader holds."""
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "charge"},
            "amount": {"type": "number", "multipleOf": 0.01},
        },
    }
    broker.grant_types.add(
        kit.admin(broker).claims,
        name="charge",
        schema=schema,
        narrowing={"amount": "at_most"},
        ctx=kit.ctx,
    )
    lt = launch(broker, kit, [{"type": "charge", "amount": 2**53 - 1}])
    with pytest.raises(InvalidAuthorizationDetails, match="amount"):
        register(broker, kit, lt, [{"type": "charge", "amount": value}])
    limits = {"allowed_values": {"account": [value]}}
    with pytest.raises(InvalidAuthorizationDetails, match="account"):
        register(broker, kit, lt, [{"type": "charge", "amount": 1, "limits": limits}])
    assert register(broker, kit, lt, [{"type": "charge", "amount": 100}]).claims.details


def test_grant_types_added_used_and_removed_in_a_loop_leave_no_memory_behind(
    broker: Any, kit: Any
) -> None:
    # An operator with admin:keys:* adds a type, has it checked once (a launch token's
    # grant), and removes it, over and over under new names: the store keeps none of them,
    # and neither may the registry's compiled validators (one per name ever used).
    admin = kit.admin(broker).claims
    for i in range(300):
        name = f"loop_type_{i}"
        broker.grant_types.add(
            admin,
            name=name,
            schema={"type": "object", "properties": {"type": {"const": name}}},
            narrowing={},
            ctx=kit.ctx,
        )
        launch(broker, kit, [{"type": name}])
        broker.grant_types.remove(admin, name, kit.ctx)
    assert broker.grant_types.list_types() == []
    assert len(broker.kernel.grant_types._compiled) <= 256
