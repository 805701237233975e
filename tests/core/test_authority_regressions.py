"""Each authority leak seen when the broker was tried as an attacker would, made impossible.

One test per behaviour (numbered as they were reported); each fails on the code that
leaked. Every refusal must carry a ``denial_id`` that leads to exactly one audit event.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    RenewalCeilingExceeded,
    RenewalCountExceeded,
    ScopeViolation,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.store import AuditQuery
from tasklease.core.validation import TokenRejected


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def valid(broker: Any, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return False
    return True


def audited_once(broker: Any, exc: TaskleaseError) -> None:
    """The refusal names a denial id, and exactly one audit event carries it."""
    assert exc.denial_id and exc.denial_id.startswith("den_"), exc
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    hits = [e for e in events if f"denial={exc.denial_id}" in e.detail]
    assert len(hits) == 1, (exc.denial_id, hits)


def refused(broker: Any, kind: type[TaskleaseError], call: Any) -> TaskleaseError:
    with pytest.raises(kind) as info:
        call()
    audited_once(broker, info.value)
    return info.value


def delegate(broker: Any, kit: Any, claims: Any, to: str, scope: list[str], **kw: Any) -> Any:
    return broker.delegate(
        claims, delegate_to=to, scope=scope, ttl=kw.pop("ttl", None), ctx=kit.ctx
    )


def resume(broker: Any, kit: Any, agent_id: str, key: SigningKey, nonce: str | None = None) -> Any:
    nonce = nonce or broker.challenge()[0]
    signature = key.sign(bytes.fromhex(nonce)).signature
    return broker.resume(agent_id=agent_id, nonce=nonce, signature=b64(signature), ctx=kit.ctx)


def heartbeat_done(broker: Any, kit: Any, agent: Any) -> None:
    now = int(broker.clock.now())
    proof = secrets.token_hex(8)
    message = heartbeat_signing_input(agent.sub, agent.claims.jti, now, proof, True)
    broker.heartbeat(
        agent.claims,
        timestamp=now,
        jti=proof,
        signature=b64(agent.key.sign(message).signature),
        done=True,
        ctx=kit.ctx,
    )


# 1 -------------------------------------------------------------------------------------------


def test_01_removed_app_launch_tokens_register_nobody(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    app, _secret = broker.register_app(
        admin, name="billing", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    app_claims = kit.app(broker, app.app_id).claims
    early, _ = broker.create_launch_token(
        app_claims,
        agent_name="a",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
    )
    running = kit.register(broker, early)
    assert running.claims.lineage == (f"app:{app.app_id}",)
    broker.deregister_app(admin, app.app_id, kit.ctx)
    args, _ = kit.register_args(broker, early)
    refused(broker, Unauthorized, lambda: broker.register(**args))
    # Offboarding also ends what the app had already launched.
    assert not valid(broker, running.token)


# 2 -------------------------------------------------------------------------------------------


def test_02_delegation_never_rearms_a_revoked_task(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    broker.revoke(kit.admin(broker).claims, level="task", target="task-b", ctx=kit.ctx)
    refused(broker, NotFound, lambda: delegate(broker, kit, a.claims, b.sub, ["read:data:*"]))


def test_02_delegation_never_rearms_an_agent_that_is_done(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    heartbeat_done(broker, kit, b)
    refused(broker, NotFound, lambda: delegate(broker, kit, a.claims, b.sub, ["read:data:*"]))


# 3 -------------------------------------------------------------------------------------------


def test_03_delegated_token_never_renews_past_its_parent(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600, max_ttl=120)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    held = delegate(broker, kit, a.claims, b.sub, ["read:data:*"], ttl=60).claims
    assert held.max_exp == a.claims.exp
    while True:
        broker.clock.advance(50)
        try:
            held = broker.renew(held, kit.ctx).claims
        except TaskleaseError as exc:
            assert isinstance(exc, RenewalCeilingExceeded | Unauthorized), exc
            break
        assert held.exp <= a.claims.exp
    assert broker.clock.now() >= a.claims.exp - 50


# 4 -------------------------------------------------------------------------------------------


def test_04_resume_continues_the_renewal_budget(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_renewals=3)
    lt = kit.launch(broker)
    a = kit.register(broker, lt)
    held = a.claims
    for _ in range(3):
        held = broker.renew(held, kit.ctx).claims
    assert held.rnc == 3
    refused(broker, RenewalCountExceeded, lambda: resume(broker, kit, a.sub, a.key))


def test_04_a_resumed_token_counts_from_the_renewals_already_spent(
    make_broker: Any, kit: Any
) -> None:
    broker = make_broker(max_renewals=4)
    a = kit.register(broker, kit.launch(broker))
    held = broker.renew(broker.renew(a.claims, kit.ctx).claims, kit.ctx).claims
    resumed = resume(broker, kit, a.sub, a.key).claims
    assert resumed.rnc == held.rnc + 1 == 3
    # The token from before the resumption continues the same budget, not one of its own.
    assert broker.renew(held, kit.ctx).claims.rnc == 4
    refused(broker, RenewalCountExceeded, lambda: broker.renew(resumed, kit.ctx))


def test_04_delegation_hands_on_the_budget_spent(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_renewals=2)
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    renewed = broker.renew(a.claims, kit.ctx).claims
    held = delegate(broker, kit, renewed, b.sub, ["read:data:*"]).claims
    assert held.rnc == 1
    held = broker.renew(held, kit.ctx).claims
    refused(broker, RenewalCountExceeded, lambda: broker.renew(held, kit.ctx))


# 5 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store_url", ["memory://", "sqlite"])
def test_05_resume_keeps_the_launch_tokens_max_ttl(
    make_broker: Any, kit: Any, tmp_path: Any, store_url: str
) -> None:
    from tasklease.storage import open_store

    url = store_url if store_url != "sqlite" else str(tmp_path / "broker.db")
    broker = make_broker(store=open_store(url))
    a = kit.register(broker, kit.launch(broker, max_ttl=45))
    assert a.claims.exp - a.claims.iat == 45
    resumed = resume(broker, kit, a.sub, a.key).claims
    assert resumed.exp - resumed.iat == 45


# 6 -------------------------------------------------------------------------------------------


def test_06_no_self_delegation_and_no_cycles(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    refused(broker, ScopeViolation, lambda: delegate(broker, kit, a.claims, a.sub, ["read:data:*"]))
    to_b = delegate(broker, kit, a.claims, b.sub, ["read:data:*"]).claims
    refused(broker, ScopeViolation, lambda: delegate(broker, kit, to_b, a.sub, ["read:data:*"]))
    refused(broker, ScopeViolation, lambda: delegate(broker, kit, to_b, b.sub, ["read:data:*"]))


# 7 -------------------------------------------------------------------------------------------


def test_07_a_by_reference_token_is_never_a_revocation_target(broker: Any, kit: Any) -> None:
    secret = "tlr_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    admin = kit.admin(broker).claims
    for level in ("token", "agent", "task", "chain"):
        with pytest.raises(InvalidRequest):
            broker.revoke(admin, level=level, target=secret, ctx=kit.ctx)
    # Nor a JWT, whole or inside another string, at any level.
    jwt = a_token = kit.register(broker).token
    for level in ("token", "agent", "task", "chain"):
        for target in (jwt, f"task {jwt}", f"{secret}!"):
            with pytest.raises(InvalidRequest):
                broker.revoke(admin, level=level, target=target, ctx=kit.ctx)
    assert broker.store.revocations_since(0) == []
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert not any(secret in e.detail or secret in e.agent_id for e in events)
    assert not any(a_token in e.detail for e in events)


# 8 -------------------------------------------------------------------------------------------


def test_08_the_principal_reaches_every_descendant(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    lt, _ = broker.create_launch_token(
        admin,
        agent_name="a",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
        principal="user:alice@example.com",
    )
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    held = [a.claims, broker.renew(a.claims, kit.ctx).claims]
    held.append(delegate(broker, kit, held[-1], b.sub, ["read:data:1"]).claims)
    held.append(broker.renew(held[-1], kit.ctx).claims)
    held.append(resume(broker, kit, a.sub, a.key).claims)
    assert {c.principal for c in held} == {"user:alice@example.com"}


# 9 -------------------------------------------------------------------------------------------


def test_09_a_forged_nonce_at_registration_is_audited(broker: Any, kit: Any) -> None:
    nonce, _ = broker.challenge()
    flipped = format(int(nonce, 16) ^ 1, "064x")
    args, _ = kit.register_args(broker, kit.launch(broker), nonce=flipped)
    refused(broker, Unauthorized, lambda: broker.register(**args))


def test_09_refusals_at_resume_are_audited(broker: Any, kit: Any) -> None:
    a = kit.register(broker, kit.launch(broker))
    nonce, _ = broker.challenge()
    flipped = format(int(nonce, 16) ^ 1, "064x")
    refused(broker, Unauthorized, lambda: resume(broker, kit, a.sub, a.key, flipped))
    refused(broker, Unauthorized, lambda: resume(broker, kit, a.sub, SigningKey.generate()))
    refused(broker, Unauthorized, lambda: resume(broker, kit, a.sub + "x", a.key))


# 13 ------------------------------------------------------------------------------------------


def test_13_released_parent_ends_its_delegated_descendants(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    c = kit.register(broker, lt, task_id="task-c")
    to_b = delegate(broker, kit, a.claims, b.sub, ["read:data:*"])
    to_c = delegate(broker, kit, to_b.claims, c.sub, ["read:data:*"])
    broker.release(a.claims, kit.ctx)
    assert not valid(broker, to_b.token)
    assert not valid(broker, to_c.token)


def test_13_delegations_of_a_renewed_parent_end_with_its_release(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    to_b = delegate(broker, kit, a.claims, b.sub, ["read:data:*"])
    renewed = broker.renew(a.claims, kit.ctx)
    assert valid(broker, to_b.token)  # a renewal is not an end
    broker.release(renewed.claims, kit.ctx)
    assert not valid(broker, to_b.token)


def test_13_token_level_revocation_ends_descendants_chain_level_keeps_the_token(
    broker: Any, kit: Any
) -> None:
    admin = kit.admin(broker).claims
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    to_b = delegate(broker, kit, a.claims, b.sub, ["read:data:*"])
    broker.revoke(admin, level="chain", target=a.claims.jti, ctx=kit.ctx)
    assert valid(broker, a.token)
    assert not valid(broker, to_b.token)
    # What it would hand on now would be born dead: refused instead.
    refused(broker, Unauthorized, lambda: delegate(broker, kit, a.claims, b.sub, ["read:data:*"]))
    c = kit.register(broker, lt, task_id="task-c")
    to_b = delegate(broker, kit, c.claims, b.sub, ["read:data:*"])
    broker.revoke(admin, level="token", target=c.claims.jti, ctx=kit.ctx)
    assert not valid(broker, c.token)
    assert not valid(broker, to_b.token)


def test_13_done_by_heartbeat_ends_the_tokens_delegations(broker: Any, kit: Any) -> None:
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    to_b = delegate(broker, kit, a.claims, b.sub, ["read:data:*"])
    heartbeat_done(broker, kit, a)
    assert not valid(broker, to_b.token)
    refused(broker, Forbidden, lambda: resume(broker, kit, a.sub, a.key))


# Found by the model-based test ---------------------------------------------------------------


def test_model_pruning_a_task_revocation_never_rearms_its_agents(
    make_broker: Any, kit: Any
) -> None:
    """Shrunk counterexample: revoke a task, let its entry age past max_ttl, prune, resume."""
    broker = make_broker(max_ttl=600, default_ttl=120, renewal_ceiling=900)
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-1")
    helper = kit.register(broker, lt, task_id="task-2")
    broker.revoke(kit.admin(broker).claims, level="task", target="task-1", ctx=kit.ctx)
    broker.clock.advance(631)
    broker.prune()
    refused(broker, TaskleaseError, lambda: resume(broker, kit, a.sub, a.key))
    fresh = resume(broker, kit, helper.sub, helper.key).claims
    refused(broker, NotFound, lambda: delegate(broker, kit, fresh, a.sub, ["read:data:*"]))


def test_model_revoking_a_grants_first_jti_reaches_delegations_of_its_renewals(
    broker: Any, kit: Any
) -> None:
    """Shrunk counterexample: chain-revoke a first token, renew it, delegate from the renewal."""
    lt = kit.launch(broker, single_use=False, ttl=600)
    a = kit.register(broker, lt, task_id="task-a")
    b = kit.register(broker, lt, task_id="task-b")
    broker.revoke(kit.admin(broker).claims, level="chain", target=a.claims.jti, ctx=kit.ctx)
    renewed = broker.renew(a.claims, kit.ctx)
    assert valid(broker, renewed.token)  # chain level keeps the token's own line alive
    # Its delegations would be born dead: the kernel refuses to issue them at all.
    refused(
        broker, Unauthorized, lambda: delegate(broker, kit, renewed.claims, b.sub, ["read:data:*"])
    )


def test_the_issuance_check_narrows_audience_itself(broker: Any) -> None:
    """Audience, like scope, is narrowed in the one check: never wider than the parent's."""
    from tasklease.core.kernel import Parent, Refusal, check_issuance

    parent = Parent(
        holder="spiffe://tasklease.local/agent/o/t/1",
        scope=("read:data:*",),
        audience=("https://orders.example",),
        principal="user:alice@example.com",
        lineage=(),
        ceiling=2_000,
        ttl=300,
        renewals=0,
        chain_agents=("spiffe://tasklease.local/agent/o/t/1",),
        grant="g",
        jti="g",
        token_exp=1_500,
    )
    common: dict[str, Any] = {
        "holder": "spiffe://tasklease.local/agent/o/t/2",
        "scope": ("read:data:1",),
        "iat": 1_000,
        "requested_ttl": 60,
        "config": broker.config,
    }
    granted = check_issuance("delegate", parent, resource="https://orders.example", **common)
    assert granted.audience == ("https://orders.example",)
    assert check_issuance("delegate", parent, **common).audience == parent.audience
    with pytest.raises(Refusal) as refusal:
        check_issuance("delegate", parent, resource="https://payments.example", **common)
    assert refusal.value.event_type == "audience"


# Token exchange (RFC 8693) through the one check: "exchange" and "narrow" ------------------


def _token_parent(**changes: Any) -> Any:
    from tasklease.core.kernel import Parent

    fields: dict[str, Any] = {
        "holder": "spiffe://a.example/agent/o/t/1",
        "scope": ("read:data:*",),
        "audience": ("spiffe://tasklease.local",),
        "principal": "user:alice@example.com",
        "lineage": ("fed:a.example",),
        "ceiling": 2_000,
        "ttl": 300,
        "renewals": 3,
        "chain_agents": ("spiffe://a.example/agent/o/t/0", "spiffe://a.example/agent/o/t/1"),
        "grant": "fed:a.example:g",
        "jti": "fed:a.example:j",
        "token_exp": 1_500,
    }
    fields.update(changes)
    return Parent(**fields)


def test_exchange_is_a_delegation_whose_audience_is_chosen_among_ours(broker: Any) -> None:
    """A foreign parent names this broker as its audience: the child gets our default
    audience or one resource, lives within the parent's exp, keeps the renewal count and
    the principal, and descends from the parent's grant and token."""
    from tasklease.core.kernel import check_issuance

    common: dict[str, Any] = {
        "holder": "spiffe://tasklease.local/agent/o/t/9",
        "scope": ("read:data:1",),
        "iat": 1_000,
        "requested_ttl": 3_000,
        "config": broker.config,
    }
    granted = check_issuance("exchange", _token_parent(), **common)
    assert granted.audience == broker.config.audience
    assert granted.exp == 1_000 + 300  # the parent's ttl (the federation's max_ttl)
    assert granted.renewals == 3 and granted.principal == "user:alice@example.com"
    assert granted.lineage == ("fed:a.example", "fed:a.example:g", "fed:a.example:j")
    assert granted.grant == ""
    late = check_issuance("exchange", _token_parent(token_exp=1_100), **common)
    assert late.exp == 1_100 and late.max_exp == 1_100
    one = check_issuance("exchange", _token_parent(), resource="https://orders.example", **common)
    assert one.audience == ("https://orders.example",)


def test_exchange_refuses_what_delegation_refuses(broker: Any) -> None:
    from tasklease.core.kernel import Refusal, check_issuance

    common: dict[str, Any] = {"iat": 1_000, "requested_ttl": 60, "config": broker.config}
    with pytest.raises(Refusal) as widening:
        check_issuance(
            "exchange",
            _token_parent(),
            holder="spiffe://tasklease.local/agent/o/t/9",
            scope=("write:data:1",),
            **common,
        )
    assert widening.value.event_type == "attenuation"
    with pytest.raises(Refusal) as cycle:
        check_issuance(
            "exchange",
            _token_parent(),
            holder="spiffe://a.example/agent/o/t/0",
            scope=("read:data:1",),
            **common,
        )
    assert "cycle" in cycle.value.detail
    deep = tuple(f"spiffe://a.example/agent/o/t/{i}" for i in range(6))
    with pytest.raises(Refusal) as depth:
        check_issuance(
            "exchange",
            _token_parent(chain_agents=deep),
            holder="spiffe://tasklease.local/agent/o/t/9",
            scope=("read:data:1",),
            **common,
        )
    assert depth.value.event_type == "depth"
    with pytest.raises(Refusal) as ended:
        check_issuance(
            "exchange",
            _token_parent(token_exp=1_000),
            holder="spiffe://tasklease.local/agent/o/t/9",
            scope=("read:data:1",),
            **common,
        )
    assert ended.value.event_type == "renewal"


def test_narrowing_keeps_the_holder_and_only_narrows(broker: Any) -> None:
    from tasklease.core.kernel import Refusal, check_issuance

    holder = "spiffe://a.example/agent/o/t/1"
    parent = _token_parent(audience=broker.config.audience)
    common: dict[str, Any] = {"iat": 1_000, "requested_ttl": 60, "config": broker.config}
    narrowed = check_issuance(
        "narrow", parent, holder=holder, scope=("read:data:1",), resource="spiffe://b", **common
    )
    assert narrowed.audience == ("spiffe://b",) and narrowed.renewals == 3
    assert narrowed.lineage[-2:] == ("fed:a.example:g", "fed:a.example:j")
    # No new hop: the holder is already in the chain and that is no cycle.
    assert holder in parent.chain_agents
    with pytest.raises(ValueError, match="keeps the holder"):
        check_issuance("narrow", parent, holder="spiffe://x/agent/o/t/2", scope=(), **common)
    with pytest.raises(Refusal) as wider:
        check_issuance("narrow", parent, holder=holder, scope=("write:data:1",), **common)
    assert wider.value.event_type == "attenuation"
    one = _token_parent(audience=("https://orders.example",))
    with pytest.raises(Refusal) as audience:
        check_issuance(
            "narrow", one, holder=holder, scope=(), resource="https://pay.example", **common
        )
    assert audience.value.event_type == "audience"


# An app's ceiling is an ancestor's bound: narrowing it holds what registers from then on -----


def _paying_app(broker: Any, kit: Any, **app: Any) -> tuple[Any, str]:
    """An app that may pay, and a multi-use launch token it made while it could."""
    admin = kit.admin(broker).claims
    record, _secret = broker.register_app(
        admin,
        name="payments",
        scopes=["read:data:*", "write:payments:*"],
        token_ttl=None,
        ctx=kit.ctx,
        **app,
    )
    launch, _ = broker.create_launch_token(
        kit.app(broker, record.app_id).claims,
        agent_name="payer",
        allowed_scope=["read:data:*", "write:payments:*"],
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
        authorization_details=app.get("authorization_details"),
    )
    return record, launch


def test_a_registration_is_held_to_its_apps_current_scopes(broker: Any, kit: Any) -> None:
    app, launch = _paying_app(broker, kit)
    assert kit.register(broker, launch, ["write:payments:1"]).claims.scope == ("write:payments:1",)
    broker.update_app(
        kit.admin(broker).claims, app.app_id, scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    for wanted in (["write:payments:*"], ["write:payments:1"], ["read:data:1", "write:payments:1"]):
        args, _ = kit.register_args(broker, launch, wanted)
        error = refused(broker, ScopeViolation, lambda args=args: broker.register(**args))
        # The audit log names the ceiling the request was held to: the app's, as it is now.
        events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
        (event,) = [e for e in events if f"denial={error.denial_id}" in e.detail]
        assert "exceeds allowed [read:data:*] (its app's ceiling now" in event.detail
    # Within the app's ceiling as it is now, the old launch token still registers.
    agent = kit.register(broker, launch, ["read:data:1"], task_id="task-2")
    assert agent.claims.scope == ("read:data:1",)
    assert agent.claims.lineage == (f"app:{app.app_id}",)


def test_a_registration_is_held_to_its_apps_current_grants(broker: Any, kit: Any) -> None:
    grant = {
        "type": "resource_access",
        "actions": ["read"],
        "locations": ["https://rs.example/"],
        "limits": {"max_calls": 5},
    }
    app, launch = _paying_app(broker, kit, authorization_details=[grant])
    args, _ = kit.register_args(broker, launch, [])
    assert broker.register(**args, authorization_details=[grant]).claims.details == (grant,)
    # The operator takes the grant away (and leaves the scopes as they were).
    broker.update_app(
        kit.admin(broker).claims,
        app.app_id,
        scopes=None,
        token_ttl=None,
        ctx=kit.ctx,
        authorization_details=[],
    )
    args, _ = kit.register_args(broker, launch, [], task_id="task-2")
    refused(broker, ScopeViolation, lambda: broker.register(**args, authorization_details=[grant]))
    args, _ = kit.register_args(broker, launch, ["read:data:1"], task_id="task-3")
    assert broker.register(**args).claims.scope == ("read:data:1",)


def test_an_apps_attestor_is_held_to_the_apps_current_scopes(make_broker: Any, kit: Any) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.hazmat.primitives.hashes import SHA256

    from tasklease.rules import jws

    issuer = "https://ci.example"
    broker = make_broker(issuer="https://broker.example")
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "kid": "k1",
        "alg": "ES256",
        "x": jws.b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": jws.b64url_encode(numbers.y.to_bytes(32, "big")),
    }

    def evidence(job: str) -> dict[str, str]:
        now = int(broker.clock.now())
        claims = {"iss": issuer, "aud": "https://broker.example", "sub": job, "jti": job}
        claims |= {"iat": now, "nbf": now, "exp": now + 300}
        head = jws.b64url_encode(json.dumps({"alg": "ES256", "kid": "k1"}).encode())
        body = jws.b64url_encode(json.dumps(claims).encode())
        r, s = decode_dss_signature(private.sign(f"{head}.{body}".encode(), ec.ECDSA(SHA256())))
        signature = jws.b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return {"type": "oidc", "evidence": f"{head}.{body}.{signature}"}

    admin = kit.admin(broker).claims
    app, _secret = broker.register_app(
        admin,
        name="payments",
        scopes=["read:data:*", "write:payments:*"],
        token_ttl=None,
        ctx=kit.ctx,
    )
    broker.attestation.add(
        admin,
        name="ci",
        type="oidc",
        settings={"issuer": issuer, "jwks": json.dumps({"keys": [jwk]})},
        policy=[{"match": {}, "scope": ["read:data:*", "write:payments:*"]}],
        app_id=app.app_id,
        ctx=kit.ctx,
    )

    def register(scope: list[str], job: str) -> Any:
        key = SigningKey.generate()
        nonce, _ = broker.challenge()
        return broker.register(
            launch_token=None,
            nonce=nonce,
            public_key=b64(bytes(key.verify_key)),
            signature=b64(key.sign(bytes.fromhex(nonce)).signature),
            orch_id="orch-1",
            task_id=job,
            requested_scope=scope,
            ctx=kit.ctx,
            attestation=evidence(job),
        )

    assert register(["write:payments:1"], "job-1").claims.scope == ("write:payments:1",)
    broker.update_app(admin, app.app_id, scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx)
    refused(broker, ScopeViolation, lambda: register(["write:payments:1"], "job-2"))
    issued = register(["read:data:1"], "job-3")
    assert issued.claims.scope == ("read:data:1",)
    assert issued.claims.lineage[0] == f"app:{app.app_id}"


# A launch token's creator names a human as principal, never a creator identity -----------


@pytest.mark.parametrize(
    "spoofed", ["app:{other}", "operator:root", "attestor:ci", "admin:root", "admin"]
)
def test_an_app_cannot_name_a_creator_as_its_agents_principal(
    broker: Any, kit: Any, spoofed: str
) -> None:
    admin = kit.admin(broker).claims
    mine, _ = broker.register_app(
        admin, name="mine", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    other, _ = broker.register_app(
        admin, name="other", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )

    def launch(claims: Any, principal: str | None) -> Any:
        return broker.create_launch_token(
            claims,
            agent_name="a",
            allowed_scope=["read:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=kit.ctx,
            principal=principal,
        )[1]

    app = kit.app(broker, mine.app_id).claims
    for creator in (app, admin):  # an operator names a human too
        with pytest.raises(InvalidRequest):
            launch(creator, spoofed.format(other=other.app_id))
    # What the broker derives itself, and a human, are what a launch token carries.
    assert launch(app, None).principal == f"app:{mine.app_id}"
    assert launch(admin, None).principal == "admin"
    assert launch(app, "user:alice@example.com").principal == "user:alice@example.com"


# A token held to one of the broker's own audiences keeps it ------------------------------


def test_a_token_for_one_of_the_brokers_audiences_only_narrows(make_broker: Any, kit: Any) -> None:
    from tasklease.core.errors import InvalidTarget
    from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
    from tasklease.core.kernel import Parent, Refusal, check_issuance

    def hand_on(claims: Any, to: str, resource: str) -> Any:
        return broker.delegate(
            claims,
            delegate_to=to,
            scope=["read:data:1"],
            ttl=None,
            ctx=kit.ctx,
            resource=resource,
        )

    orders = "https://orders.example"
    broker = make_broker(audience=("tasklease", orders))
    launch, _ = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="a",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
        resource=[orders],
    )
    held = kit.register(broker, launch)
    assert held.claims.aud == (orders,)
    other = kit.register(broker, task_id="task-2")
    assert other.claims.aud == ("tasklease",)  # named no resource: not yet restricted
    pay = "https://payments.example"
    refused(broker, InvalidTarget, lambda: hand_on(held.claims, other.sub, pay))
    narrowing = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=held.token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        resource=pay,
    )
    refused(broker, InvalidTarget, lambda: broker.exchange_token(narrowing, kit.ctx))
    # Within it, and from a token that was never restricted, nothing changed.
    assert hand_on(held.claims, other.sub, orders).claims.aud == (orders,)
    moved = hand_on(other.claims, held.sub, pay)
    assert moved.claims.aud == (pay,)
    # The rule itself, as the SDK and verifiers run it: only the default audience, or all
    # of the broker's audiences (tokens minted before the default was one), re-target.
    common: dict[str, Any] = {"scope": (), "iat": 1_000, "requested_ttl": 60}
    common |= {"config": broker.config, "resource": pay, "holder": "spiffe://x/agent/o/t/9"}

    def parent(audience: tuple[str, ...]) -> Parent:
        return Parent(
            holder="spiffe://x/agent/o/t/1",
            scope=("read:data:*",),
            audience=audience,
            principal="user:alice@example.com",
            lineage=(),
            ceiling=2_000,
            ttl=300,
            renewals=0,
            chain_agents=("spiffe://x/agent/o/t/1",),
            grant="g",
            jti="g",
            token_exp=1_500,
        )

    for unrestricted in (("tasklease",), ("tasklease", orders), (orders, "tasklease")):
        assert check_issuance("delegate", parent(unrestricted), **common).audience == (pay,)
    with pytest.raises(Refusal) as refusal:
        check_issuance("delegate", parent((orders,)), **common)
    assert refusal.value.event_type == "audience"


@pytest.mark.parametrize("audience", [("tasklease",), ("https://api.example", "https://x.example")])
def test_a_launch_token_for_the_default_audience_alone_is_refused(
    make_broker: Any, kit: Any, audience: tuple[str, ...]
) -> None:
    """A token for the default audience is one no resource was asked for, which may be
    narrowed to any resource later: such a launch token would restrict nothing, and says
    so rather than seem to. Another of the broker's audiences restricts (the test above)."""
    from tasklease.core.errors import InvalidRequest

    broker = make_broker(audience=audience)

    def launch(resource: list[str]) -> Any:
        return broker.create_launch_token(
            kit.admin(broker).claims,
            agent_name="broker-only",
            allowed_scope=["read:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=kit.ctx,
            resource=resource,
        )

    files = "https://files.example"
    for listed in ([audience[0]], [audience[0], files], [files, audience[0]]):
        with pytest.raises(InvalidRequest, match="restricts nothing"):
            launch(listed)
    assert launch(["https://files.example"])


def test_under_a_resource_ceiling_the_default_audience_is_never_handed_out() -> None:
    """A ceiling that lists the default audience (a launch token made before that was
    refused, an attestation policy) still gives no token for it: such a token could be
    narrowed to any resource, outside the ceiling. The kernel's rule, not the input's."""
    from tasklease.rules.issuance import TargetRefused, choose_audience

    default = ("tasklease", "https://orders.example")
    files = "https://files.example"
    for allowed, requested in (
        (("tasklease", files), "tasklease"),
        ((files, "tasklease"), "tasklease"),
        (("tasklease",), None),
    ):
        with pytest.raises(TargetRefused, match="restricts nothing"):
            choose_audience(requested, allowed, default)
    assert choose_audience(files, ("tasklease", files), default) == (files,)
    assert choose_audience(None, (files,), default) == (files,)
    # Without a ceiling nothing changed: no resource is the default audience.
    assert choose_audience(None, (), default) == ("tasklease",)
    assert choose_audience("tasklease", (), default) == ("tasklease",)


# What is handed to an agent ends with the agent's app ----------------------------------


def _app_agent(broker: Any, kit: Any, name: str, task: str) -> tuple[Any, Any]:
    """An app named ``name`` and an agent it launched (task ``task``)."""
    app, _ = broker.register_app(
        kit.admin(broker).claims, name=name, scopes=["read:data:*"], token_ttl=None,
        ctx=kit.ctx,
    )  # fmt: skip
    launch, _ = broker.create_launch_token(
        kit.app(broker, app.app_id).claims, agent_name=name, allowed_scope=["read:data:*"],
        max_ttl=None, single_use=None, ttl=None, ctx=kit.ctx,
    )  # fmt: skip
    return app, kit.register(broker, launch, task_id=task)


def test_a_token_handed_to_an_agent_ends_when_its_app_is_removed(
    make_broker: Any, kit: Any
) -> None:
    """Removing an app ends what its agents hold, their own tokens and what was
    delegated to them by another app's agents (invariant 1: the holder is an ancestor)."""
    from tasklease.core.validation import TokenRejected

    broker = make_broker()
    _, giver = _app_agent(broker, kit, "giver", "t-giver")
    taker_app, taker = _app_agent(broker, kit, "taker", "t-taker")
    handed = broker.delegate(
        giver.claims, delegate_to=taker.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    assert f"app:{taker_app.app_id}" in handed.claims.lineage
    broker.deregister_app(kit.admin(broker).claims, taker_app.app_id, kit.ctx)
    for token in (taker.token, handed.token):
        with pytest.raises(TokenRejected, match="revoked"):
            broker.validate(token)
    assert broker.validate(giver.token).sub == giver.sub  # the giver's app is untouched
