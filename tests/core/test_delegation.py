"""Delegation: attenuation only, bounded depth and lifetime, broker-signed chain records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasklease.core.delegation import record_signing_input, verify_chain_records
from tasklease.core.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    ScopeViolation,
    Unauthorized,
)
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import KIND_AGENT, DelegationRecord, chain_hash, mint
from tasklease.core.validation import TokenRejected


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


@pytest.fixture
def agents(broker: Any, kit: Any) -> list[Any]:
    launch = kit.launch(broker, ["read:data:*", "write:data:*"], single_use=False, ttl=600)
    return [
        kit.register(broker, launch, ["read:data:*", "write:data:*"], task_id=f"t{i}")
        for i in range(8)
    ]


def verify_keys(broker: Any) -> Any:
    ring = broker.keyring
    return lambda: [ring.verify_key(kid) for kid in ring.kids()]


def delegate(broker: Any, kit: Any, claims: Any, to: Any, scope: list[str], ttl: Any = None) -> Any:
    return broker.delegate(claims, delegate_to=to.sub, scope=scope, ttl=ttl, ctx=kit.ctx)


def test_delegate_happy_path(broker: Any, kit: Any, agents: list[Any], clock: Any) -> None:
    a, b = agents[0], agents[1]
    out = delegate(broker, kit, a.claims, b, ["read:data:42"])
    c = out.claims
    assert c.sub == b.sub
    assert c.scope == ("read:data:42",)
    assert c.exp - c.iat == 60  # delegation_default_ttl
    assert c.task_id == a.claims.task_id  # the delegator's task travels with the authority
    assert c.oiat == a.claims.oiat
    assert len(c.delegation_chain) == 1
    record = c.delegation_chain[0]
    assert record.agent == a.sub
    assert record.scope == a.claims.scope
    assert c.chain_hash == chain_hash(c.delegation_chain)
    assert verify_chain_records(c.delegation_chain, b.sub, verify_keys(broker))
    # The record is signed over (delegator, delegate, scope, time): not liftable elsewhere.
    message = record_signing_input(a.sub, b.sub, a.claims.scope, record.delegated_at)
    assert broker.keyring.verify_key(broker.keyring.active_kid).verify(
        message, bytes.fromhex(record.signature)
    )
    assert not verify_chain_records(c.delegation_chain, agents[2].sub, verify_keys(broker))
    signed = broker.validate(out.token)
    assert signed.depth == 1
    assert signed.raw["chain_hash"] == c.chain_hash
    created = events(broker, "delegation_created")
    assert len(created) == 1
    assert created[0].deleg_depth == 1
    assert created[0].deleg_chain_hash == c.chain_hash


def test_scope_must_be_subset(broker: Any, kit: Any, agents: list[Any]) -> None:
    a, b = agents[0], agents[1]
    narrow = delegate(broker, kit, a.claims, b, ["read:data:1"])
    for wider in (["read:data:*"], ["read:data:1", "read:data:2"], ["write:data:1"]):
        with pytest.raises(ScopeViolation):
            delegate(broker, kit, narrow.claims, agents[2], wider)
    with pytest.raises(ScopeViolation):
        delegate(broker, kit, a.claims, b, ["read:logs:1"])
    violations = events(broker, "delegation_attenuation_violation")
    assert len(violations) == 4
    assert all(v.outcome == "denied" for v in violations)
    assert "requested=[read:data:*]" in violations[0].detail
    assert len(events(broker, "delegation_created")) == 1


def test_five_hops_allowed_sixth_refused(broker: Any, kit: Any, agents: list[Any]) -> None:
    claims = agents[0].claims
    for hop in range(1, 6):
        claims = delegate(broker, kit, claims, agents[hop], ["read:data:1"]).claims
        assert claims.depth == hop
    with pytest.raises(ScopeViolation, match="depth"):
        delegate(broker, kit, claims, agents[6], ["read:data:1"])
    exceeded = events(broker, "delegation_depth_exceeded")
    assert len(exceeded) == 1
    assert exceeded[0].deleg_depth == 5


def test_depth_limit_follows_config(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_delegation_depth=1)
    launch = kit.launch(broker, single_use=False)
    a, b, c = (kit.register(broker, launch) for _ in range(3))
    one = delegate(broker, kit, a.claims, b, ["read:data:1"])
    with pytest.raises(ScopeViolation):
        delegate(broker, kit, one.claims, c, ["read:data:1"])


def fake_chain(n: int) -> tuple[DelegationRecord, ...]:
    return tuple(
        DelegationRecord(
            agent=f"spiffe://tasklease.local/agent/o/t/{i:016x}",
            scope=("read:data:*",),
            delegated_at="2027-01-15T08:00:00Z",
            signature="00" * 64,
        )
        for i in range(n)
    )


def mint_agent(broker: Any, **overrides: Any) -> tuple[str, Any]:
    cfg = broker.config
    args: dict[str, Any] = {
        "kind": KIND_AGENT,
        "iss": cfg.issuer,
        "sub": "spiffe://tasklease.local/agent/o/t/00000000000000ff",
        "aud": cfg.audience,
        "iat": int(broker.clock.now()),
        "ttl": 60,
        "scope": ("read:data:1",),
        "client_id": "admin",
        "task_id": "t",
        "orch_id": "o",
    }
    args.update(overrides)
    return mint(broker.keyring, **args)


def test_depth_limit_enforced_at_validation(broker: Any) -> None:
    at_limit, _ = mint_agent(broker, delegation_chain=fake_chain(5))
    assert broker.validate(at_limit).depth == 5
    too_deep, _ = mint_agent(broker, delegation_chain=fake_chain(6))
    with pytest.raises(TokenRejected, match="depth"):
        broker.validate(too_deep)


def test_tampered_chain_hash_rejected_at_validation(broker: Any) -> None:
    chain = fake_chain(2)
    _, claims = mint_agent(broker, delegation_chain=chain)
    payload = dict(claims.raw)
    payload["chain_hash"] = "0" * 64
    tampered = broker.keyring.sign(json.dumps(payload).encode(), KIND_AGENT)
    with pytest.raises(TokenRejected, match="chain hash"):
        broker.validate(tampered)
    # A chain record edited after hashing is caught the same way.
    payload = dict(claims.raw)
    records = [dict(r) for r in payload["delegation_chain"]]
    records[0]["scope"] = ["write:data:*"]
    payload["delegation_chain"] = records
    edited = broker.keyring.sign(json.dumps(payload).encode(), KIND_AGENT)
    with pytest.raises(TokenRejected, match="chain hash"):
        broker.validate(edited)
    # A chain_hash without a chain is refused too.
    payload = {k: v for k, v in claims.raw.items() if k != "delegation_chain"}
    orphan = broker.keyring.sign(json.dumps(payload).encode(), KIND_AGENT)
    with pytest.raises(TokenRejected, match="chain_hash"):
        broker.validate(orphan)


@pytest.mark.parametrize("signature", ["00" * 64, "zz" * 64, "ab", "a" * 127])
def test_forged_chain_record_cannot_delegate_further(
    broker: Any, kit: Any, agents: list[Any], signature: str
) -> None:
    a, b, c = agents[0], agents[1], agents[2]
    forged = (
        DelegationRecord(
            agent=a.sub,
            scope=a.claims.scope,
            delegated_at="2027-01-15T08:00:00Z",
            signature=signature,
        ),
    )
    token, _ = mint_agent(broker, sub=b.sub, scope=("read:data:*",), delegation_chain=forged)
    claims = broker.validate(token)  # chain_hash is right: validation alone cannot tell
    with pytest.raises(Unauthorized):
        broker.delegate(claims, delegate_to=c.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx)
    assert events(broker, "delegation_created") == []
    assert any("delegation chain" in e.detail for e in events(broker, "token_auth_failed"))


def test_record_lifted_into_another_chain_cannot_delegate(
    broker: Any, kit: Any, agents: list[Any]
) -> None:
    """A genuine record from a->b, replayed in a token whose subject is c, is refused."""
    a, b, c, d = agents[:4]
    genuine = delegate(broker, kit, a.claims, b, ["read:data:1"]).claims
    token, _ = mint_agent(
        broker, sub=c.sub, scope=("read:data:1",), delegation_chain=genuine.delegation_chain
    )
    with pytest.raises(Unauthorized):
        broker.delegate(
            broker.validate(token), delegate_to=d.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
        )


def test_delegated_token_cannot_outlive_delegator(
    broker: Any, kit: Any, agents: list[Any], clock: Any
) -> None:
    a, b = agents[0], agents[1]
    remaining = a.claims.exp - int(clock.now())
    out = delegate(broker, kit, a.claims, b, ["read:data:1"], ttl=3000)
    assert out.claims.exp == a.claims.exp
    assert out.claims.exp - out.claims.iat == remaining
    clock.advance(remaining - 10)
    later = delegate(broker, kit, a.claims, b, ["read:data:1"], ttl=3000)
    assert later.claims.exp == a.claims.exp
    assert later.claims.exp - later.claims.iat == 10
    # A requested TTL shorter than what is left is honoured.
    short = delegate(broker, kit, a.claims, b, ["read:data:1"], ttl=5)
    assert short.claims.exp - short.claims.iat == 5


def test_delegator_past_its_exp_cannot_delegate(
    broker: Any, kit: Any, agents: list[Any], clock: Any
) -> None:
    a, b = agents[0], agents[1]
    clock.set(a.claims.exp)  # a token is dead at its exp: no leeway
    with pytest.raises(TokenRejected):
        broker.validate(a.token)
    with pytest.raises(Unauthorized):
        delegate(broker, kit, a.claims, b, ["read:data:1"])


def test_admin_and_app_tokens_cannot_delegate(broker: Any, kit: Any, agents: list[Any]) -> None:
    target = agents[0]
    for issued, scope in (
        (kit.admin(broker), ["admin:revoke:*"]),
        (kit.app(broker), ["app:launch-tokens:*"]),
    ):
        with pytest.raises(Forbidden) as info:
            broker.delegate(
                issued.claims, delegate_to=target.sub, scope=scope, ttl=None, ctx=kit.ctx
            )
        assert info.value.code == "forbidden"
    assert len(events(broker, "delegate_denied")) == 2
    assert events(broker, "delegation_created") == []


@pytest.mark.parametrize(
    ("delegate_to", "scope", "ttl", "field"),
    [
        (None, ["read:data:1"], None, "delegate_to"),
        ("", ["read:data:1"], None, "delegate_to"),
        (42, ["read:data:1"], None, "delegate_to"),
        ("AGENT", None, None, "scope"),
        ("AGENT", [], None, "scope"),
        ("AGENT", "read:data:1", None, "scope"),
        ("AGENT", ["read:data"], None, "scope"),
        ("AGENT", ["read:data:1"], "60", "ttl"),
        ("AGENT", ["read:data:1"], 1.5, "ttl"),
    ],
)
def test_missing_or_malformed_fields_are_invalid_request(
    broker: Any, kit: Any, agents: list[Any], delegate_to: Any, scope: Any, ttl: Any, field: str
) -> None:
    if delegate_to == "AGENT":
        delegate_to = agents[1].sub
    with pytest.raises(InvalidRequest) as info:
        broker.delegate(
            agents[0].claims, delegate_to=delegate_to, scope=scope, ttl=ttl, ctx=kit.ctx
        )
    assert field in info.value.detail


@pytest.mark.parametrize(
    "target",
    [
        "spiffe://tasklease.local/agent/o/t/0000000000000000",
        "not-a-spiffe-id",
        "admin",
        "app:app-demo-abc123",
    ],
)
def test_unknown_delegate_is_not_found(
    broker: Any, kit: Any, agents: list[Any], target: str
) -> None:
    with pytest.raises(NotFound):
        broker.delegate(
            agents[0].claims, delegate_to=target, scope=["read:data:1"], ttl=None, ctx=kit.ctx
        )


def test_revoked_delegate_is_not_found(broker: Any, kit: Any, agents: list[Any]) -> None:
    a, b = agents[0], agents[1]
    broker.revoke(kit.admin(broker).claims, level="agent", target=b.sub, ctx=kit.ctx)
    with pytest.raises(NotFound):
        delegate(broker, kit, a.claims, b, ["read:data:1"])


def test_delegated_token_can_be_renewed_but_not_widened(
    broker: Any, kit: Any, agents: list[Any]
) -> None:
    a, b, c = agents[:3]
    out = delegate(broker, kit, a.claims, b, ["read:data:1"])
    renewed = broker.renew(out.claims, kit.ctx)
    assert renewed.claims.scope == ("read:data:1",)
    with pytest.raises(ScopeViolation):
        delegate(broker, kit, renewed.claims, c, ["read:data:2"])
    further = delegate(broker, kit, renewed.claims, c, ["read:data:1"])
    assert further.claims.depth == 2
    assert verify_chain_records(further.claims.delegation_chain, c.sub, verify_keys(broker))


def test_app_cannot_escape_its_ceiling(broker: Any, kit: Any, agents: list[Any]) -> None:
    """AgentWrit let an app delegate app:launch-tokens:* to an agent; here neither path works."""
    app, _ = broker.register_app(
        kit.admin(broker).claims,
        name="narrow-app",
        scopes=["read:data:1"],
        token_ttl=None,
        ctx=kit.ctx,
    )
    app_claims = kit.app(broker, app.app_id).claims
    with pytest.raises(Forbidden):
        broker.delegate(
            app_claims,
            delegate_to=agents[0].sub,
            scope=["app:launch-tokens:*"],
            ttl=None,
            ctx=kit.ctx,
        )
    for wider in (["read:data:*"], ["read:data:2"], ["app:launch-tokens:*"]):
        with pytest.raises(Forbidden):
            broker.create_launch_token(
                app_claims,
                agent_name="x",
                allowed_scope=wider,
                max_ttl=None,
                single_use=None,
                ttl=None,
                ctx=kit.ctx,
            )
    assert len(events(broker, "scope_ceiling_exceeded")) == 3
    launch, _ = broker.create_launch_token(
        app_claims,
        agent_name="x",
        allowed_scope=["read:data:1"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    agent = kit.register(broker, launch, ["read:data:1"])
    with pytest.raises(ScopeViolation):
        broker.delegate(
            agent.claims, delegate_to=agents[0].sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
        )
