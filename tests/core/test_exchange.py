"""RFC 8693 token exchange in the core: narrowing a token, and carrying a federated
domain's token across (A→B, A→B→A, three domains), with the mapping policy narrowing,
refusals audited once each, and revocations crossing the bridge (core.peerfeed)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.delegation import record_signing_input
from tasklease.core.errors import (
    InvalidAuthorizationDetails,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TaskleaseError,
    UnsupportedGrantType,
)
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, Exchanged, ExchangeRequest
from tasklease.core.foreign import converted, local_part, map_scopes
from tasklease.core.keys import KeyRing
from tasklease.core.records import MAX_TARGET, RevocationRecord
from tasklease.core.store import AuditQuery, Store
from tasklease.core.tokens import KIND_AGENT, Claims, DelegationRecord, mint
from tasklease.core.validation import TokenRejected
from tasklease.rules.bundle import TrustBundle, serialize_bundle
from tasklease.storage import MemoryStore, SQLiteStore

from .conftest import b64, declare_done

START = 1_800_000_000.0
A, B, C = "a.example", "b.example", "c.example"


def bundle_of(broker: Broker) -> str:
    ring = broker.keyring
    keys = {kid: bytes(key) for kid in ring.kids() if (key := ring.verify_key(kid)) is not None}
    return serialize_bundle(TrustBundle(broker.config.trust_domain, 1, 60, keys)).decode()


def federate(
    at: Broker,
    peer: Broker,
    kit: Any,
    *,
    scope_map: list[list[str]] | None = None,
    ceiling: list[str] | None = None,
    max_ttl: int = 120,
) -> None:
    at.federation.add(
        kit.admin(at).claims,
        trust_domain=peer.config.trust_domain,
        bundle=bundle_of(peer),
        scope_map=scope_map if scope_map is not None else [["read:data:*", "read:data:*"]],
        scope_ceiling=ceiling,
        max_ttl=max_ttl,
        ctx=kit.ctx,
    )


def narrow(broker: Broker, kit: Any, token: str, **params: Any) -> Exchanged:
    fields: dict[str, Any] = {
        "grant_type": GRANT_TYPE,
        "subject_token": token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    return broker.exchange_token(ExchangeRequest(**{**fields, **params}), kit.ctx)


def exchange(broker: Broker, kit: Any, subject: str, actor: str, **params: Any) -> Exchanged:
    return narrow(
        broker, kit, subject, actor_token=actor, actor_token_type=ACCESS_TOKEN_TYPE, **params
    )


def for_domain(broker: Broker, kit: Any, token: str, domain: str, **params: Any) -> str:
    """The holder narrows its token to another domain's audience."""
    return narrow(broker, kit, token, resource=f"spiffe://{domain}", **params).token


def minted_at_a(a: Broker, alice: Any, clock: ManualClock, **claims: Any) -> str:
    """A token A signs for its agent ``alice`` (task ``t-alice`` unless ``claims`` say
    otherwise), for B's audience, with ``claims`` of A's own making (a lineage, a
    delegation chain, a task, a principal)."""
    token, _ = mint(
        a.keyring,
        kind=KIND_AGENT,
        iss=a.config.issuer,
        sub=alice.sub,
        aud=(f"spiffe://{B}",),
        iat=int(clock.now()),
        ttl=60,
        scope=("read:data:1",),
        client_id=alice.claims.client_id,
        **{"task_id": "t-alice", "orch_id": "orch-1", **claims},
    )
    return token


def valid(broker: Broker, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return False
    return True


def refused(broker: Broker, kind: type[TaskleaseError], call: Any) -> TaskleaseError:
    with pytest.raises(kind) as info:
        call()
    exc = info.value
    assert exc.denial_id and exc.denial_id.startswith("den_"), exc
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert len([e for e in events if f"denial={exc.denial_id}" in e.detail]) == 1
    return exc


def cross(source: Broker, target: Broker) -> int:
    """Carry ``source``'s whole revocation feed to ``target``; entries written there."""
    records = source.revocation_feed(None).records
    return len(target.apply_federated_revocations(source.config.trust_domain, records))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def a(make_broker: Any, clock: ManualClock) -> Broker:
    broker: Broker = make_broker(clock=clock, trust_domain=A, keyring=KeyRing.generate())
    return broker


@pytest.fixture
def b(make_broker: Any, clock: ManualClock) -> Broker:
    broker: Broker = make_broker(clock=clock, trust_domain=B, keyring=KeyRing.generate())
    return broker


@pytest.fixture
def c(make_broker: Any, clock: ManualClock) -> Broker:
    broker: Broker = make_broker(clock=clock, trust_domain=C, keyring=KeyRing.generate())
    return broker


# --- narrowing ---------------------------------------------------------------------------


def test_narrowing_keeps_the_holder_and_ends_with_its_parent(a: Broker, kit: Any) -> None:
    agent = kit.register(a, scope=["read:data:*", "write:data:*"])
    done = narrow(a, kit, agent.token, scope="read:data:7", resource="https://orders.example")
    new = done.issued.claims
    assert new.sub == agent.sub and new.scope == ("read:data:7",)
    assert new.aud == ("https://orders.example",) and done.scope == ("read:data:7",)
    assert new.exp <= agent.claims.exp and new.rnc == agent.claims.rnc
    assert new.lineage[-1] == agent.claims.jti and new.principal == agent.claims.principal
    assert done.token_type == "Bearer" and done.issued_token_type == ACCESS_TOKEN_TYPE
    assert a.validate(done.token, audience="https://orders.example").jti == new.jti
    a.release(agent.claims, kit.ctx)
    assert not valid(a, done.token) and not valid(a, agent.token)


def test_narrowing_events_name_the_principal_and_the_app(a: Broker, kit: Any) -> None:
    """A query by principal or app finds narrowings and their refusals too, as it finds
    registrations, renewals and delegations."""
    from tasklease.rules.auditchain import principal_ref

    app, secret = a.register_app(
        kit.admin(a).claims, name="orders-bot", scopes=["read:data:*"], token_ttl=None,
        ctx=kit.ctx,
    )  # fmt: skip
    app_claims = a.app_auth(app.client_id, secret, kit.ctx).claims
    launch, _ = a.create_launch_token(
        app_claims, agent_name="a", allowed_scope=["read:data:*"], max_ttl=None,
        single_use=None, ttl=None, ctx=kit.ctx, principal="user:alice@example.com",
    )  # fmt: skip
    agent = kit.register(a, launch)
    narrow(a, kit, agent.token, resource="https://orders.example")
    refused(a, InvalidScope, lambda: narrow(a, kit, agent.token, scope="write:data:1"))
    events, _ = a.store.query_audit(AuditQuery(limit=10_000))
    mine = [e for e in events if e.event_type in ("token_exchanged", "token_exchange_denied")]
    assert {e.event_type for e in mine} == {"token_exchanged", "token_exchange_denied"}
    for event in mine:
        assert event.principal_ref == principal_ref("user:alice@example.com"), event
        assert event.app_id == app.app_id, event


def test_narrowing_never_widens(a: Broker, kit: Any) -> None:
    agent = kit.register(a, scope=["read:data:*"])
    refused(a, InvalidScope, lambda: narrow(a, kit, agent.token, scope="write:data:1"))
    one = narrow(a, kit, agent.token, resource="https://orders.example").token
    refused(a, InvalidTarget, lambda: narrow(a, kit, one, resource="https://pay.example"))


def test_a_bad_request_is_named_as_rfc_6749_says(a: Broker, kit: Any) -> None:
    agent = kit.register(a)
    with pytest.raises(UnsupportedGrantType):
        narrow(a, kit, agent.token, grant_type="client_credentials")
    with pytest.raises(InvalidRequest, match="subject_token_type"):
        narrow(a, kit, agent.token, subject_token_type="urn:x")
    with pytest.raises(InvalidRequest, match="requested_token_type"):
        narrow(
            a, kit, agent.token, requested_token_type="urn:ietf:params:oauth:token-type:id_token"
        )
    with pytest.raises(InvalidRequest, match="actor_token_type"):
        narrow(a, kit, agent.token, actor_token_type=ACCESS_TOKEN_TYPE)
    # An invalid subject token is invalid_request (RFC 8693 section 2.2.2), audited.
    refused(a, InvalidRequest, lambda: narrow(a, kit, agent.token[:-4] + "AAAA"))


def released(broker: Broker, kit: Any, agent: Any, clock: ManualClock) -> None:
    """``agent`` resumes, then declares itself done with the resumed token: its session
    is released, while its first token (a resumption leaves it alive) still validates."""
    clock.advance(2)
    nonce, _ = broker.challenge()
    resumed = broker.resume(
        agent_id=agent.sub,
        nonce=nonce,
        signature=b64(agent.key.sign(bytes.fromhex(nonce)).signature),
        ctx=kit.ctx,
    ).claims
    clock.advance(1)
    declare_done(broker, kit.ctx, agent, resumed)
    assert valid(broker, agent.token)


def denial_detail(broker: Broker, exc: TaskleaseError) -> str:
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={exc.denial_id}" in e.detail]
    return event.detail


def test_an_agent_that_declared_itself_done_narrows_nothing(
    a: Broker, kit: Any, clock: ManualClock
) -> None:
    """Its token still validates, but its holder is out of standing and derives nothing
    from it."""
    agent = kit.register(a, scope=["read:data:*"])
    released(a, kit, agent, clock)
    exc = refused(a, InvalidRequest, lambda: narrow(a, kit, agent.token, scope="read:data:1"))
    assert "agent session is released" in denial_detail(a, exc)
    events, _ = a.store.query_audit(AuditQuery(event_type="token_exchanged"))
    assert events == []


def test_an_actor_token_of_ours_is_for_a_federated_subject_only(a: Broker, kit: Any) -> None:
    """Within the domain another agent's token as actor_token is refused, not ignored:
    handing authority to another agent here is delegation."""
    agent = kit.register(a, scope=["read:data:*"], task_id="t-a")
    other = kit.register(a, scope=["read:data:*"], task_id="t-b")
    with pytest.raises(InvalidRequest, match="federated domain"):
        exchange(a, kit, agent.token, other.token)
    events, _ = a.store.query_audit(AuditQuery(event_type="token_exchanged"))
    assert events == []


# --- across domains ----------------------------------------------------------------------


def test_a_token_of_a_crosses_to_b_narrowed_by_the_mapping(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit, scope_map=[["read:data:*", "read:records:*"]], ceiling=["read:records:*"])
    alice = kit.register(a, scope=["read:data:*", "write:data:*"])
    bob = kit.register(b, scope=["write:x:1"])
    subject = for_domain(a, kit, alice.token, B, scope="read:data:42 write:data:42")
    done = exchange(b, kit, subject, bob.token)
    new = done.issued.claims
    assert new.sub == bob.sub and new.scope == ("read:records:42",)  # write: not mapped
    assert new.aud == b.config.audience and new.client_id == bob.claims.client_id
    assert new.exp <= START + 120 and new.max_exp <= alice.claims.exp
    # A's admin made alice's launch token: its principal is A's, namespaced, never ours.
    assert alice.claims.principal == "admin" and new.principal == f"fed:{A}:admin"
    assert [r.agent for r in new.delegation_chain] == [alice.sub]
    assert new.lineage[:3] == (f"fed:{A}", f"fed:{A}:task:task-1", f"fed:{A}:agent:{alice.sub}")
    assert b.validate(done.token).sub == bob.sub
    # What the mapping does not grant is refused, audited once.
    refused(b, InvalidScope, lambda: exchange(b, kit, subject, bob.token, scope="read:data:42"))


def test_the_act_chain_keeps_a_hops_and_b_hands_it_on(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit)
    first = kit.register(a, scope=["read:data:*"], task_id="t-a")
    second = kit.register(a, scope=["read:data:*"], task_id="t-a2")
    hop = a.delegate(
        first.claims, delegate_to=second.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    subject = for_domain(a, kit, hop.token, B)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-b")
    carol = kit.register(b, scope=["read:data:*"], task_id="t-c")
    held = exchange(b, kit, subject, bob.token).issued.claims
    assert [r.agent for r in held.delegation_chain] == [first.sub, second.sub]
    assert held.raw["act"]["sub"] == bob.sub
    # The chain was re-signed by B: B's own delegation extends it.
    onward = b.delegate(held, delegate_to=carol.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx)
    assert [r.agent for r in onward.claims.delegation_chain] == [first.sub, second.sub, bob.sub]
    assert onward.claims.principal == f"fed:{A}:{first.claims.principal}"
    assert valid(b, onward.token)


def test_the_ceiling_bounds_what_the_mapping_grants(a: Broker, b: Broker, kit: Any) -> None:
    """A scope the map grants but the federation record's ceiling does not cover is not
    granted, by default or on request."""
    federate(
        b,
        a,
        kit,
        scope_map=[["read:data:*", "read:records:*"], ["write:data:*", "write:records:*"]],
        ceiling=["read:records:*"],
    )
    alice = kit.register(a, scope=["read:data:*", "write:data:*"])
    bob = kit.register(b, scope=["read:data:*"])
    subject = for_domain(a, kit, alice.token, B, scope="read:data:42 write:data:42")
    assert exchange(b, kit, subject, bob.token).issued.claims.scope == ("read:records:42",)
    refused(b, InvalidScope, lambda: exchange(b, kit, subject, bob.token, scope="write:records:42"))


def test_a_federated_subject_is_exchanged_for_scopes_only(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit)
    alice = kit.register(a, scope=["read:data:*"])
    bob = kit.register(b, scope=["read:data:*"])
    subject = for_domain(a, kit, alice.token, B)
    grant = '[{"type": "scope", "scope": "read:data:1"}]'
    with pytest.raises(InvalidAuthorizationDetails, match="scopes only"):
        exchange(b, kit, subject, bob.token, authorization_details=grant)
    events, _ = b.store.query_audit(AuditQuery(event_type="token_exchanged"))
    assert events == []


def test_an_actor_that_declared_itself_done_receives_nothing(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """The actor becomes the holder: out of standing (its session released), it receives
    nothing, though its token still validates."""
    federate(b, a, kit)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    released(b, kit, bob, clock)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    subject = for_domain(a, kit, alice.token, B)
    exc = refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    assert "agent session is released" in denial_detail(b, exc)
    events, _ = b.store.query_audit(AuditQuery(event_type="token_exchanged"))
    assert events == []


def test_our_own_revocation_of_a_foreign_agent_stops_its_tokens_here(
    a: Broker, b: Broker, kit: Any
) -> None:
    """Our operator revokes a federated domain's agent by its SPIFFE ID, with no feed
    from that domain: its tokens are exchanged here no more."""
    federate(b, a, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    subject = for_domain(a, kit, alice.token, B)
    assert exchange(b, kit, subject, bob.token).token
    b.revoke(kit.admin(b).claims, level="agent", target=alice.sub, ctx=kit.ctx)
    exc = refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    assert "subject_token revoked here at level agent" in denial_detail(b, exc)


def test_a_foreign_chain_of_two_hops_is_re_signed_hop_by_hop(
    a: Broker, b: Broker, kit: Any
) -> None:
    """Each re-signed record names the agent its hop went to (the next record's, the last
    one's the subject's): B's own delegation, which checks every record, extends it."""
    federate(b, a, kit)
    first = kit.register(a, scope=["read:data:*"], task_id="t-1")
    second = kit.register(a, scope=["read:data:*"], task_id="t-2")
    third = kit.register(a, scope=["read:data:*"], task_id="t-3")
    one = a.delegate(
        first.claims, delegate_to=second.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    two = a.delegate(
        one.claims, delegate_to=third.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    bob = kit.register(b, scope=["read:data:*"], task_id="t-b")
    carol = kit.register(b, scope=["read:data:*"], task_id="t-c")
    held = exchange(b, kit, for_domain(a, kit, two.token, B), bob.token).issued.claims
    assert [r.agent for r in held.delegation_chain] == [first.sub, second.sub, third.sub]
    onward = b.delegate(held, delegate_to=carol.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx)
    assert [r.agent for r in onward.claims.delegation_chain] == [
        first.sub, second.sub, third.sub, bob.sub,
    ]  # fmt: skip
    assert valid(b, onward.token)


def test_refusals_at_the_bridge_are_audited_once(a: Broker, b: Broker, kit: Any) -> None:
    alice = kit.register(a, scope=["read:data:*"])
    bob = kit.register(b, scope=["read:data:*"])
    subject = for_domain(a, kit, alice.token, B)
    # Not federated yet: refused like any invalid token.
    refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    federate(b, a, kit)
    # Not for B: a token for the default audience (or another domain) is not exchanged.
    refused(b, InvalidRequest, lambda: exchange(b, kit, alice.token, bob.token))
    other = for_domain(a, kit, alice.token, C)
    refused(b, InvalidRequest, lambda: exchange(b, kit, other, bob.token))
    # Without the actor's own token there is no one to hold the new one.
    with pytest.raises(InvalidRequest, match="actor_token"):
        narrow(b, kit, subject)
    # A forged token: A's claims signed by a key not in A's bundle.
    forger = make_like(a)
    mallory = kit.register(forger, scope=["read:data:*"])
    forged = for_domain(forger, kit, mallory.token, B)
    refused(b, InvalidRequest, lambda: exchange(b, kit, forged, bob.token))
    # The actor must be a valid local agent token.
    refused(b, InvalidRequest, lambda: exchange(b, kit, subject, kit.admin(b).token))
    assert exchange(b, kit, subject, bob.token).issued.claims.sub == bob.sub


def make_like(broker: Broker, nonce_secret: bytes = b"x" * 32) -> Broker:
    """Another broker claiming ``broker``'s trust domain, with keys of its own."""
    from tasklease.core.config import Config
    from tasklease.storage import MemoryStore

    return Broker(
        Config(
            trust_domain=broker.config.trust_domain,
            admin_secret_hash=broker.config.admin_secret_hash,
        ),
        MemoryStore(),
        KeyRing.generate(),
        clock=broker.clock,
        nonce_secret=nonce_secret,
    )


def test_a_stale_bundle_fails_closed(a: Broker, b: Broker, kit: Any, clock: ManualClock) -> None:
    b.federation.add(
        kit.admin(b).claims,
        trust_domain=A,
        bundle_endpoint_url="https://a.example/v1/federation/bundle",
        scope_map=[["read:data:*", "read:data:*"]],
        max_bundle_age=300,
        ctx=kit.ctx,
    )
    record = b.federation.record(A)
    b.federation.accept_bundle(A, bundle_of(a).encode(), version=record.created_at, now=START)
    alice = kit.register(a, scope=["read:data:*"])
    bob = kit.register(b, scope=["read:data:*"])
    assert exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token)
    clock.advance(301)
    alice = kit.register(a, scope=["read:data:*"], task_id="task-2")
    bob = kit.register(b, scope=["read:data:*"], task_id="task-2")
    subject = for_domain(a, kit, alice.token, B)
    refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))


def test_a_to_b_to_a_maps_back_to_a_and_refuses_a_cycle(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit)
    federate(a, b, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    dave = kit.register(a, scope=["read:data:*"], task_id="t-dave")
    at_b = exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token).token
    back = for_domain(b, kit, at_b, A)
    done = exchange(a, kit, back, dave.token)
    home = done.issued.claims
    # A's own ancestors are A's local ids again; B's are namespaced. They are listed as B
    # names them too, which B's revocations of what it derived from A reach.
    assert alice.claims.jti in home.lineage and f"fed:{B}" in home.lineage
    assert f"fed:{B}:fed:{A}:{alice.claims.jti}" in home.lineage
    assert [r.agent for r in home.delegation_chain] == [alice.sub, bob.sub]
    # The agent that started the chain may not receive it back: no cycles.
    refused(a, InvalidRequest, lambda: exchange(a, kit, back, alice.token))
    # A's own revocation of the root's token ends the token that went out and came back,
    # with no feed in between: A's own index applies to A's own ids.
    assert valid(a, done.token)
    a.revoke(kit.admin(a).claims, level="chain", target=alice.claims.jti, ctx=kit.ctx)
    assert not valid(a, done.token)
    refused(a, InvalidRequest, lambda: exchange(a, kit, back, dave.token))


def test_a_peer_cannot_make_us_sign_a_hop_our_agent_never_made(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """A (the peer) writes, signed with its own key, a hop "B's victim delegated to A's
    alice" that no token of ours ever backed. Exchanged at B, it would become a token whose
    subject is our agent, with a record of that hop signed by our key: refused, since a
    chain that went out from here lists the ids of our token it came from."""
    federate(b, a, kit)
    victim = kit.register(b, scope=["read:data:*"], task_id="t-victim")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    at = "2027-01-15T08:00:00Z"
    forged = DelegationRecord(
        agent=victim.sub,
        scope=("read:data:*",),
        delegated_at=at,
        signature=a.keyring.sign_detached(
            record_signing_input(victim.sub, alice.sub, ("read:data:*",), at)
        ).hex(),
    )
    subject = minted_at_a(a, alice, clock, delegation_chain=(forged,))
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={error.denial_id}" in e.detail]
    assert "none of our token ids" in event.detail


def forged_hop(a: Broker, b: Broker, kit: Any, clock: ManualClock, ours: str) -> str:
    """A's token for its alice, with a hop "B's victim delegated to alice" that A wrote and
    signed itself, listing ``ours`` as the id of B's token it claims to descend from."""
    victim = kit.register(b, scope=["read:data:*"], task_id="t-victim")
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    at = "2027-01-15T08:00:00Z"
    forged = DelegationRecord(
        agent=victim.sub,
        scope=("read:data:*",),
        delegated_at=at,
        signature=a.keyring.sign_detached(
            record_signing_input(victim.sub, alice.sub, ("read:data:*",), at)
        ).hex(),
    )
    return minted_at_a(a, alice, clock, delegation_chain=(forged,), lineage=(f"fed:{B}:{ours}",))


@pytest.mark.parametrize("made_up", ["made-up", "ab" * 16, "0f" * 24])
def test_a_peer_cannot_pass_a_made_up_id_as_one_of_ours(
    a: Broker, b: Broker, kit: Any, clock: ManualClock, made_up: str
) -> None:
    """Listing ``fed:<us>:<anything>`` does not make a chain one that went out from here:
    only an id we minted (its MAC under our key) does."""
    federate(b, a, kit)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    subject = forged_hop(a, b, kit, clock, made_up)
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={error.denial_id}" in e.detail]
    assert "none of our token ids" in event.detail
    assert not [e for e in events if e.event_type == "token_exchanged"]


def test_an_id_another_broker_minted_is_not_one_of_ours(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """A token id minted by another broker of our trust domain name (another nonce
    secret) is well formed and MAC'd, but not under our key: refused."""
    federate(b, a, kit)
    other = make_like(b, nonce_secret=b"y" * 32)
    theirs = kit.register(other, scope=["read:data:*"], task_id="t-other").claims.jti
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    subject = forged_hop(a, b, kit, clock, theirs)
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={error.denial_id}" in e.detail]
    assert "none of our token ids" in event.detail


def victim_of_b(b: Broker, kit: Any) -> Any:
    """B's agent working for a human (``user:victim@example.com``), task ``t-victim``."""
    launch, _ = b.create_launch_token(
        kit.admin(b).claims,
        agent_name="victim",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
        principal="user:victim@example.com",
    )
    return kit.register(b, launch, scope=["read:data:*"], task_id="t-victim")


def hop_at_a(
    a: Broker, kit: Any, clock: ManualClock, seen: Claims, **changed: Any
) -> tuple[str, Any]:
    """What A's exchange of B's token ``seen`` gives A's alice: the hop "``seen``'s holder
    delegated its scope to alice" re-signed by A, B's ids namespaced, B's task and
    principal kept; ``changed`` alters the hop (``agent``, ``scope``), ``task_id`` or
    ``principal``. A writes it all with its own key: nothing of it needs B's."""
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    agent = changed.get("agent", seen.sub)
    scope = changed.get("scope", seen.scope)
    at = "2027-01-15T08:00:00Z"
    record = DelegationRecord(
        agent=agent,
        scope=scope,
        delegated_at=at,
        signature=a.keyring.sign_detached(record_signing_input(agent, alice.sub, scope, at)).hex(),
    )
    ids = [*seen.lineage, *([seen.grant] if seen.grant else []), seen.jti]
    token = minted_at_a(
        a,
        alice,
        clock,
        task_id=changed.get("task_id", seen.task_id),
        orch_id=seen.orch_id,
        oiat=seen.oiat,
        principal=changed.get("principal", seen.principal),
        delegation_chain=(record,),
        lineage=tuple(f"fed:{B}:{i}" for i in ids),
    )
    return token, alice


@pytest.mark.parametrize(
    "seen, changed",
    [
        # Tokens A could see without the victim ever crossing to A: a registration's
        # (B's own audience), one narrowed for a resource server of A's.
        ("registered", {}),
        ("for_a_resource", {}),
        # The victim's token made to cross to A, with a hop other than its own.
        ("for_a", {"scope": ("read:data:*", "read:data:2")}),
        ("for_a", {"task_id": "t-other"}),
        ("for_a", {"principal": "user:someone-else@example.com"}),
        ("for_a", {"agent": "other"}),
        # Made to cross to C, not to A.
        ("for_c", {}),
    ],
)
def test_a_peer_that_has_seen_our_token_cannot_turn_its_id_into_another_hop(
    a: Broker, b: Broker, kit: Any, clock: ManualClock, seen: str, changed: dict[str, Any]
) -> None:
    """An id of ours vouches for the one hop out its token allows (core.tokenids): a peer
    that has seen one of our tokens cannot list its id under a hop our agent never made,
    whether the token never named the peer's domain or the hop differs from the token's
    holder, scope, task or principal."""
    federate(b, a, kit)
    victim = victim_of_b(b, kit)
    tokens = {
        "registered": victim.claims,
        "for_a_resource": narrow(
            b, kit, victim.token, resource="https://rs.a.example"
        ).issued.claims,
        "for_a": narrow(
            b, kit, victim.token, resource=f"spiffe://{A}", scope="read:data:1"
        ).issued.claims,
        "for_c": narrow(b, kit, victim.token, resource=f"spiffe://{C}").issued.claims,
    }
    if changed.get("agent") == "other":
        changed = {"agent": kit.register(b, scope=["read:data:*"], task_id="t-other").sub}
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    forged, _ = hop_at_a(a, kit, clock, tokens[seen], **changed)
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, forged, bob.token))
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={error.denial_id}" in e.detail]
    assert f"none of our token ids vouches for its hop out to {A}" in event.detail
    assert not [e for e in events if e.event_type == "token_exchanged" and bob.sub in e.detail]


def test_what_comes_back_lives_no_longer_than_its_lineage_could_here(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """The hop our token allowed, brought back by the peer after its lineage's ceiling
    (registered at its oiat, ended by renewal_ceiling here) in a token of the peer's
    fresh making: refused, as our own lineage would be. Within it, the same goes through."""
    federate(b, a, kit)
    victim = victim_of_b(b, kit)
    for_a = narrow(b, kit, victim.token, resource=f"spiffe://{A}", scope="read:data:1")
    clock.advance(b.config.renewal_ceiling + 1)
    late, _ = hop_at_a(a, kit, clock, for_a.issued.claims)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, late, bob.token))
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    [event] = [e for e in events if f"denial={error.denial_id}" in e.detail]
    assert "lineage ceiling reached" in event.detail


def test_the_hop_our_token_allowed_comes_back(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """The counterpart: the victim's token made to cross to A, and the hop it allowed
    exactly (its holder, scope, task and principal), comes back, as a genuine exchange at
    A would. The check is what the id vouches for, not who wrote the record."""
    federate(b, a, kit)
    victim = victim_of_b(b, kit)
    for_a = narrow(b, kit, victim.token, resource=f"spiffe://{A}", scope="read:data:1")
    back, alice = hop_at_a(a, kit, clock, for_a.issued.claims)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    home = exchange(b, kit, back, bob.token).issued.claims
    assert [r.agent for r in home.delegation_chain] == [victim.sub, alice.sub]
    assert home.principal == "user:victim@example.com"
    assert (home.task_id, home.scope) == ("t-victim", ("read:data:1",))


def test_a_to_b_to_a_home_agents_standing_counts(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit)
    federate(a, b, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    dave = kit.register(a, scope=["read:data:*"], task_id="t-dave")
    back = for_domain(
        b, kit, exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token).token, A
    )
    a.revoke(kit.admin(a).claims, level="agent", target=alice.sub, ctx=kit.ctx)
    refused(a, InvalidRequest, lambda: exchange(a, kit, back, dave.token))


def test_the_actor_receives_nothing_past_its_registration_lifetime(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """The actor becomes the new token's holder, as a delegate does: past its
    registration's lifetime ceiling it is refused, and what it was handed ended then."""
    federate(b, a, kit)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    clock.advance(b.config.renewal_ceiling - 200)
    carol = kit.register(b, scope=["read:data:*"], task_id="t-carol")
    held = b.delegate(
        carol.claims, delegate_to=bob.sub, scope=["read:data:*"], ttl=300, ctx=kit.ctx
    )
    assert held.claims.exp == bob.claims.max_exp  # handed to bob: ends with bob
    clock.advance(250)
    assert clock.now() >= bob.claims.max_exp
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    subject = for_domain(a, kit, alice.token, B)
    exc = refused(b, InvalidRequest, lambda: exchange(b, kit, subject, held.token))
    events, _ = b.store.query_audit(AuditQuery(limit=10_000))
    (event,) = [e for e in events if f"denial={exc.denial_id}" in e.detail]
    assert "token expired" in event.detail, event.detail


def test_a_to_b_to_a_home_task_revocation_counts(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit)
    federate(a, b, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    dave = kit.register(a, scope=["read:data:*"], task_id="t-dave")
    back = for_domain(
        b, kit, exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token).token, A
    )
    a.revoke(kit.admin(a).claims, level="task", target="t-alice", ctx=kit.ctx)
    refused(a, InvalidRequest, lambda: exchange(a, kit, back, dave.token))


# --- revocation across the bridge --------------------------------------------------------


@pytest.mark.parametrize("level", ["task", "agent", "chain", "token"])
def test_revocation_in_a_ends_what_b_derived(a: Broker, b: Broker, kit: Any, level: str) -> None:
    federate(b, a, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    subject = for_domain(a, kit, alice.token, B)
    held = exchange(b, kit, subject, bob.token)
    assert valid(b, held.token) and valid(b, bob.token)
    target = {
        "task": "t-alice",
        "agent": alice.sub,
        "chain": alice.claims.jti,
        "token": alice.claims.jti,
    }[level]
    a.revoke(kit.admin(a).claims, level=level, target=target, ctx=kit.ctx)
    assert cross(a, b) >= 1
    assert not valid(b, held.token)
    assert valid(b, bob.token)  # B's own agent's own token is B's business
    refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    events, _ = b.audit_events(AuditQuery(event_type="federation_revocation"))
    assert events and A in events[0].detail
    # Read again after a reconnection: nothing new is written.
    assert cross(a, b) == 0


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_domain_revoking_a_target_again_widens_our_entry(
    make_broker: Any, kit: Any, clock: ManualClock, tmp_path: Path, backend: str
) -> None:
    """A revokes task t at 0 and again at 450: our entry, which would have expired at
    631, is widened to A's second revocation, so a token of t that A revoked at 450 is
    still refused here at 653. Reading A's feed again later writes nothing more."""
    lifetimes = {
        "max_ttl": 600,
        "renewal_ceiling": 600,
        "launch_token_max_ttl": 600,
        "default_ttl": 300,
    }
    store: Store = MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "b.db")
    a = make_broker(clock=clock, trust_domain=A, **lifetimes)
    b = make_broker(clock=clock, trust_domain=B, store=store, **lifetimes)
    federate(b, a, kit)
    admin = kit.admin(a).claims
    target = f"fed:{A}:task:t-shared"
    kit.register(a, scope=["read:data:*"], task_id="t-shared")
    a.revoke(admin, level="task", target="t-shared", ctx=kit.ctx)
    assert cross(a, b) == 1
    (first,) = b.store.find_revocations([("chain", target)])
    assert first.expires_at < START + 653

    clock.advance(450)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-shared")
    subject = for_domain(a, kit, alice.token, B)
    a.revoke(kit.admin(a).claims, level="task", target="t-shared", ctx=kit.ctx)
    assert cross(a, b) == 1
    (widened,) = b.store.find_revocations([("chain", target)])
    # A dates a task entry clock_skew past its clock (decision 142); ours keeps A's time.
    assert widened.revoked_at == START + 450 + a.config.clock_skew
    assert widened.expires_at > START + 653
    assert widened.seq > first.seq
    assert [r.target for r in b.revocation_feed(first.seq).records] == [target]
    events, _ = b.audit_events(AuditQuery(event_type="federation_revocation"))
    assert sorted(e.detail.rsplit(" ", 1)[-1] for e in events) == [
        "entry=inserted",
        "entry=widened",
    ]
    # The same feed read again (a restart of the follower) is nothing new, even later.
    clock.advance(10)
    assert cross(a, b) == 0
    assert b.store.find_revocations([("chain", target)]) == [widened]

    clock.advance(193)
    b.prune()
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))


def test_a_domain_can_only_end_what_came_from_it(a: Broker, b: Broker, kit: Any) -> None:
    federate(b, a, kit)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    # A revokes B's agent, B's task name and B's token id in its own records.
    admin = kit.admin(a).claims
    a.revoke(admin, level="agent", target=bob.sub, ctx=kit.ctx)
    a.revoke(admin, level="task", target="t-bob", ctx=kit.ctx)
    a.revoke(admin, level="chain", target=bob.claims.jti, ctx=kit.ctx)
    assert cross(a, b) == 3
    assert valid(b, bob.token)
    assert valid(b, kit.register(b, scope=["read:data:*"], task_id="t-bob").token)
    # A domain no longer federated writes nothing.
    b.federation.remove(kit.admin(b).claims, A, kit.ctx)
    a.revoke(admin, level="task", target="t-other", ctx=kit.ctx)
    assert cross(a, b) == 0


def test_three_domains_c_to_a_to_b_revocation_travels_two_bridges(
    a: Broker, b: Broker, c: Broker, kit: Any
) -> None:
    federate(a, c, kit)
    federate(b, a, kit)
    carol = kit.register(c, scope=["read:data:*"], task_id="t-carol")
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    at_a = exchange(a, kit, for_domain(c, kit, carol.token, A), alice.token)
    at_b = exchange(b, kit, for_domain(a, kit, at_a.token, B), bob.token)
    chain = [r.agent for r in at_b.issued.claims.delegation_chain]
    assert chain == [carol.sub, alice.sub]
    assert f"fed:{A}:fed:{C}" in at_b.issued.claims.lineage
    # C's admin, as A carried it, as B carries it: each domain that vouched is named.
    assert at_b.issued.claims.principal == f"fed:{A}:fed:{C}:{carol.claims.principal}"
    c.revoke(kit.admin(c).claims, level="agent", target=carol.sub, ctx=kit.ctx)
    cross(c, a)
    assert not valid(a, at_a.token) and valid(b, at_b.token)
    cross(a, b)
    assert not valid(b, at_b.token)


def test_a_foreign_token_naming_an_id_too_long_to_revoke_here_is_refused(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """A lineage id longer than a revocation target here: A's revocation of it could
    never be made ours (``converted`` skips it), so nothing is derived from it."""
    federate(b, a, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")

    def foreign(entry: str) -> str:
        return minted_at_a(a, alice, clock, lineage=(entry,))

    room = MAX_TARGET - len(f"fed:{A}:")
    held = exchange(b, kit, foreign("x" * room), bob.token)
    assert f"fed:{A}:{'x' * room}" in held.issued.claims.lineage
    refused(b, InvalidRequest, lambda: exchange(b, kit, foreign("x" * (room + 1)), bob.token))


# --- the pure parts ----------------------------------------------------------------------


def test_a_feed_entry_too_long_to_be_ours_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    room = MAX_TARGET - len(f"fed:{A}:task:")

    def ours(target: str) -> RevocationRecord | None:
        record = RevocationRecord("task", target, 1, START + 60, 5)
        return converted(record, A, now=START, expiry=lambda at: at + 60)

    fits = ours("t" * room)
    assert fits is not None and len(fits.target) == MAX_TARGET
    with caplog.at_level(logging.WARNING, logger="tasklease.federation"):
        assert ours("t" * (room + 1)) is None
    assert f"revocation feed of {A}: skipped a task-level entry" in caplog.text
    assert "seq=5" in caplog.text


def test_scope_mapping_only_narrows() -> None:
    pairs = [("read:data:*", "read:records:*"), ("write:data:1", "write:records:9")]
    held = ["read:data:42", "write:data:1", "write:data:2", "delete:data:1"]
    assert map_scopes(held, pairs, ()) == ("read:records:42", "write:records:9")
    assert map_scopes(held, pairs, ["read:records:*"]) == ("read:records:42",)
    assert map_scopes(["read:data:*"], pairs, ["read:records:7"]) == ("read:records:7",)
    assert map_scopes(["read:data:*"], pairs, ["read:other:*"]) == ()
    assert map_scopes(["read:data:*"], [], []) == ()


def test_local_part_finds_our_own_ids_through_any_number_of_bridges() -> None:
    assert local_part("fed:b:x", "b") == "x"
    assert local_part("fed:a:fed:b:agent:spiffe://b/agent/o/t/i", "b") == (
        "agent:spiffe://b/agent/o/t/i"
    )
    assert local_part("fed:a:fed:b", "b") == ""
    assert local_part("fed:a:x", "b") is None
    assert local_part("app:fed:b:x", "b") is None


def test_a_feed_credential_is_named_never_a_path(b: Broker, kit: Any) -> None:
    """The admin API names a file in the tenant's credentials directory, never a path:
    it cannot make the broker read another file (another tenant's credentials)."""
    common: dict[str, Any] = {
        "trust_domain": A,
        "bundle_endpoint_url": "https://a.example/v1/federation/bundle",
        "revocation_feed": "https://a.example",
        "ctx": kit.ctx,
    }
    for bad in ("/etc/passwd", "../tenants/acme/a.json", "..", ".hidden", "a b.json"):
        with pytest.raises(InvalidRequest, match="file name"):
            b.federation.add(kit.admin(b).claims, feed_credentials_file=bad, **common)
    with pytest.raises(InvalidRequest, match="together"):
        b.federation.add(kit.admin(b).claims, **common)
    record, _ = b.federation.add(kit.admin(b).claims, feed_credentials_file="a.json", **common)
    assert record.feed_credentials_file == "a.json"


def _proof(key: Any, url: str, now: float, token: str | None = None) -> str:
    """An RFC 9449 DPoP proof by ``key`` for a POST to ``url`` (``ath`` of ``token``)."""
    import base64
    import hashlib
    import json
    import secrets

    def b64u(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(bytes(key.verify_key))}
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}
    body: dict[str, Any] = {"jti": secrets.token_hex(8), "htm": "POST", "htu": url, "iat": int(now)}
    if token is not None:
        body["ath"] = b64u(hashlib.sha256(token.encode()).digest())
    signing = b64u(json.dumps(head).encode()) + "." + b64u(json.dumps(body).encode())
    return signing + "." + b64u(key.sign(signing.encode()).signature)


def test_a_bound_actor_proves_possession_and_the_new_token_is_bound_to_it(
    a: Broker, b: Broker, kit: Any
) -> None:
    from dataclasses import replace

    from nacl.signing import SigningKey

    federate(b, a, kit)
    alice = kit.register(a, scope=["read:data:*"])
    subject = for_domain(a, kit, alice.token, B)
    key = SigningKey.generate()
    register = "https://b.example/v1/register"
    args, _ = kit.register_args(b, kit.launch(b), ["read:data:*"])
    ctx = replace(kit.ctx, dpop=_proof(key, register, START), method="POST", url=register)
    bob = b.register(**{**args, "ctx": ctx})
    assert "jkt" in bob.claims.raw["cnf"]
    token_url = "https://b.example/v1/oauth/token"
    request = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=subject,
        subject_token_type=ACCESS_TOKEN_TYPE,
        actor_token=bob.token,
        actor_token_type=ACCESS_TOKEN_TYPE,
    )
    bare = replace(kit.ctx, method="POST", url=token_url)
    refused(b, InvalidRequest, lambda: b.exchange_token(request, bare))  # no proof
    stranger = _proof(SigningKey.generate(), token_url, START, bob.token)
    refused(b, InvalidRequest, lambda: b.exchange_token(request, replace(bare, dpop=stranger)))
    proven = replace(bare, dpop=_proof(key, token_url, START, bob.token))
    done = b.exchange_token(request, proven)
    assert done.token_type == "DPoP"
    assert done.issued.claims.raw["cnf"] == bob.claims.raw["cnf"]


def test_a_narrowed_token_stays_bound_to_its_holders_key(a: Broker, kit: Any) -> None:
    """Narrowing a DPoP-bound token proves possession of its key, and the narrower token
    is bound to the same key: narrowing never turns a bound token into a bearer one."""
    from dataclasses import replace

    from nacl.signing import SigningKey

    key = SigningKey.generate()
    register = "https://a.example/v1/register"
    args, _ = kit.register_args(a, kit.launch(a), ["read:data:*"])
    ctx = replace(kit.ctx, dpop=_proof(key, register, START), method="POST", url=register)
    agent = a.register(**{**args, "ctx": ctx})
    assert "jkt" in agent.claims.raw["cnf"]
    token_url = "https://a.example/v1/oauth/token"
    request = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=agent.token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read:data:1",
    )
    bare = replace(kit.ctx, method="POST", url=token_url)
    refused(a, InvalidRequest, lambda: a.exchange_token(request, bare))  # no proof
    proven = replace(bare, dpop=_proof(key, token_url, START, agent.token))
    done = a.exchange_token(request, proven)
    assert done.token_type == "DPoP"
    assert done.issued.claims.raw["cnf"] == agent.claims.raw["cnf"]
    # Presented without a proof of that key, the narrower token is refused.
    with pytest.raises(TaskleaseError):
        a.authenticate(kit.bearer(done.token), bare)


def test_a_narrowed_delegated_token_keeps_its_chain_and_ends_with_its_delegator(
    a: Broker, kit: Any
) -> None:
    """The narrower token of a delegated one carries the same delegation chain: revoking
    the delegator's delegations ends it too."""
    first = kit.register(a, scope=["read:data:*"], task_id="t-first")
    second = kit.register(a, scope=["read:data:*"], task_id="t-second")
    held = a.delegate(
        first.claims, delegate_to=second.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    done = narrow(a, kit, held.token, scope="read:data:1")
    new = done.issued.claims
    assert new.sub == second.sub
    assert [r.agent for r in new.delegation_chain] == [first.sub]
    assert new.delegation_chain == held.claims.delegation_chain
    assert valid(a, done.token)
    a.revoke(kit.admin(a).claims, level="chain", target=first.sub, ctx=kit.ctx)
    assert not valid(a, done.token)


def test_the_new_token_lives_no_longer_than_the_actors_own_tokens(
    a: Broker, b: Broker, kit: Any
) -> None:
    """The actor's launch token limits each of its tokens to 30 s: the token it receives
    by exchange too, though the federation record would allow 120 s."""
    federate(b, a, kit, max_ttl=120)
    bob = kit.register(b, kit.launch(b, max_ttl=30), task_id="t-bob")
    assert bob.claims.exp - bob.claims.iat == 30
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    new = exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token).issued.claims
    assert new.sub == bob.sub
    assert new.exp - new.iat == 30


def test_the_new_token_ends_by_the_actors_registration_lifetime_ceiling(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """Fifty seconds before the actor's registration reaches its lifetime ceiling, what
    it receives by exchange ends at that ceiling, not 120 s later."""
    federate(b, a, kit, max_ttl=120)
    bob = kit.register(b, kit.launch(b, max_ttl=b.config.max_ttl), task_id="t-bob")
    ceiling = bob.claims.max_exp
    assert ceiling == int(START) + b.config.renewal_ceiling and bob.claims.exp == ceiling
    clock.advance(b.config.renewal_ceiling - 50)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    done = exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token)
    assert done.issued.claims.exp == ceiling and done.issued.claims.max_exp == ceiling
    assert valid(b, done.token)
    clock.advance(50 + b.config.clock_skew)
    assert not valid(b, done.token)


def test_removing_the_actors_app_ends_what_it_received_by_exchange(
    a: Broker, b: Broker, kit: Any
) -> None:
    """The new token lists the actor's app among its ancestors, as a delegated token
    lists its delegate's: removing the app ends it."""
    federate(b, a, kit)
    admin = kit.admin(b).claims
    app, secret = b.register_app(
        admin, name="bob-bot", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    launch, _ = b.create_launch_token(
        b.app_auth(app.client_id, secret, kit.ctx).claims, agent_name="bob",
        allowed_scope=["read:data:*"], max_ttl=None, single_use=None, ttl=None, ctx=kit.ctx,
    )  # fmt: skip
    bob = kit.register(b, launch, task_id="t-bob")
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    done = exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token)
    assert f"app:{app.app_id}" in done.issued.claims.lineage
    assert valid(b, done.token)
    b.deregister_app(admin, app.app_id, kit.ctx)
    assert not valid(b, done.token)


def test_a_cross_domain_exchange_naming_a_resource_is_for_that_resource_only(
    a: Broker, b: Broker, kit: Any
) -> None:
    """The foreign token was for B as a whole; the actor names one of B's resources and
    gets a token for it alone, not for B's default audience, and it narrows no further
    to another resource."""
    federate(b, a, kit)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    subject = for_domain(a, kit, alice.token, B)
    done = exchange(b, kit, subject, bob.token, resource="https://orders.example")
    assert done.issued.claims.aud == ("https://orders.example",)
    assert b.validate(done.token, audience="https://orders.example").sub == bob.sub
    assert not valid(b, done.token)  # not for B's default audience
    refused(b, InvalidTarget, lambda: narrow(b, kit, done.token, resource="https://pay.example"))
    # Naming no resource, it is for B's default audience.
    assert exchange(b, kit, subject, bob.token).issued.claims.aud == b.config.audience[:1]


# --- what the new token carries of its registration ---------------------------------------

AHEAD = 100  # a replica whose clock runs well ahead of the one that revokes


def ahead_and_behind(make_broker: Any, **config: Any) -> tuple[Broker, Broker]:
    """Two replicas of one broker (one store, one keyring): the first's clock ``AHEAD``
    seconds ahead of the second's."""
    store, ring = MemoryStore(), KeyRing.generate()
    fast = make_broker(store=store, keyring=ring, clock=ManualClock(START + AHEAD), **config)
    slow = make_broker(store=store, keyring=ring, clock=ManualClock(START), **config)
    return fast, slow


def test_a_narrowed_token_carries_its_registrations_time_into_revocation(
    make_broker: Any, kit: Any
) -> None:
    """The narrower token keeps its subject's ``oiat``: an agent revocation dated before
    its own ``iat`` (the replica that narrowed runs ahead) still ends it, as it ends the
    registration's other tokens."""
    fast, slow = ahead_and_behind(make_broker)
    agent = kit.register(slow)
    done = narrow(fast, kit, agent.token, scope="read:data:1")
    new = done.issued.claims
    assert new.oiat == agent.claims.oiat == int(START) and new.iat == int(START) + AHEAD
    slow.revoke(kit.admin(slow).claims, level="agent", target=agent.sub, ctx=kit.ctx)
    fast.refresh_revocations()
    (entry,) = slow.store.find_revocations([("agent", agent.sub)])
    assert entry.revoked_at < new.iat
    assert not valid(fast, agent.token)
    assert not valid(fast, done.token)


def test_a_cross_domain_token_carries_the_subjects_registration_time(
    make_broker: Any, a: Broker, kit: Any
) -> None:
    """The token B issues by exchange keeps the foreign token's ``oiat``: B revoking its
    actor ends it though B's replica that issued it dated it after the revocation."""
    fast, slow = ahead_and_behind(make_broker, trust_domain=B)
    federate(fast, a, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(slow, scope=["read:data:*"], task_id="t-bob")
    done = exchange(fast, kit, for_domain(a, kit, alice.token, B), bob.token)
    new = done.issued.claims
    assert new.oiat == alice.claims.oiat == int(START) and new.iat == int(START) + AHEAD
    slow.revoke(kit.admin(slow).claims, level="agent", target=bob.sub, ctx=kit.ctx)
    fast.refresh_revocations()
    (entry,) = slow.store.find_revocations([("agent", bob.sub)])
    assert entry.revoked_at < new.iat
    assert not valid(fast, done.token)


def test_the_hop_to_the_actor_records_the_foreign_scopes_and_b_extends_it(
    a: Broker, b: Broker, kit: Any
) -> None:
    """Under a mapping that renames scopes, the hop from A's holder to the actor records
    what A's holder held (A's names), signed by B over exactly that: B's own delegation,
    which checks every record's signature, extends the chain."""
    federate(b, a, kit, scope_map=[["read:data:*", "read:records:*"]])
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    carol = kit.register(b, scope=["read:data:*"], task_id="t-carol")
    subject = for_domain(a, kit, alice.token, B, scope="read:data:7")
    held = exchange(b, kit, subject, bob.token).issued.claims
    assert held.scope == ("read:records:7",)
    (hop,) = held.delegation_chain
    assert hop.agent == alice.sub and hop.scope == ("read:data:7",)
    onward = b.delegate(
        held, delegate_to=carol.sub, scope=["read:records:7"], ttl=None, ctx=kit.ctx
    )
    assert [r.agent for r in onward.claims.delegation_chain] == [alice.sub, bob.sub]
    assert valid(b, onward.token)


def test_narrowing_gives_the_default_lifetime_within_the_subjects(
    a: Broker, kit: Any, clock: ManualClock
) -> None:
    """A narrower token of an hour-long token lives the default lifetime, not the rest of
    the hour; of a token with less left, no longer than it."""
    agent = kit.register(a, kit.launch(a, max_ttl=3600), task_id="t-long")
    assert agent.claims.exp - agent.claims.iat == 3600
    new = narrow(a, kit, agent.token, scope="read:data:1").issued.claims
    assert new.exp - new.iat == a.config.default_ttl
    clock.advance(3600 - 100)
    late = narrow(a, kit, agent.token, scope="read:data:1").issued.claims
    assert late.exp == agent.claims.exp


def test_a_narrowed_token_names_its_holders_registered_key(a: Broker, kit: Any) -> None:
    """Peers, workload identity and offline attenuation read the holder's key from the
    token (``agent_jwk``): the narrower token names the same registered key."""
    agent = kit.register(a, scope=["read:data:*"])
    done = narrow(a, kit, agent.token, scope="read:data:1")
    assert done.issued.claims.raw["agent_jwk"] == agent.claims.raw["agent_jwk"]
    wit, _ = a.workload_identity(a.validate(done.token), kit.ctx)
    assert wit


def test_a_cross_domain_exchange_gives_the_default_lifetime_within_the_record(
    a: Broker, b: Broker, kit: Any
) -> None:
    """With the federation record, A's token and the actor's tokens all allowing an hour,
    the token the actor receives lives the default lifetime."""
    federate(b, a, kit, max_ttl=3600)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, kit.launch(b, max_ttl=3600), task_id="t-bob")
    subject, foreign = mint(
        a.keyring, kind=KIND_AGENT, iss=a.config.issuer, sub=alice.sub,
        aud=(f"spiffe://{B}",), iat=int(START), ttl=3600, scope=("read:data:1",),
        client_id=alice.claims.client_id, task_id="t-alice", orch_id="orch-1",
    )  # fmt: skip
    assert min(foreign.exp, bob.claims.exp) - int(START) == 3600
    new = exchange(b, kit, subject, bob.token).issued.claims
    assert new.exp - new.iat == b.config.default_ttl


def three_domains_and_back(
    a: Broker, b: Broker, c: Broker, kit: Any, clock: ManualClock, between: Any = None
) -> tuple[Any, str]:
    """C's agent carol's token (task ``t-c``) is exchanged at A by dave, who hands it on
    to B, where bob exchanges it and sends it back to A; ``between`` runs after dave
    handed it on, 40 s before B's exchange. A's agent eve and B's token for A."""
    federate(a, c, kit)
    federate(b, a, kit)
    federate(a, b, kit)
    carol = kit.register(c, scope=["read:data:*"], task_id="t-c")
    dave = kit.register(a, scope=["read:data:*"], task_id="t-dave")
    held = exchange(a, kit, for_domain(c, kit, carol.token, A), dave.token)
    assert held.issued.claims.task_id == "t-c"
    to_b = for_domain(a, kit, held.token, B)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    eve = kit.register(a, scope=["read:data:*"], task_id="t-eve")
    clock.advance(5)
    if between is not None:
        between(held)
    clock.advance(35)
    back = for_domain(b, kit, exchange(b, kit, to_b, bob.token).token, A)
    return eve, back


def test_a_chain_through_a_third_domain_comes_back(
    a: Broker, b: Broker, c: Broker, kit: Any, clock: ManualClock
) -> None:
    """C's agent is in the chain that comes back to A: B lists it under A's name (A
    handed it on), yet it is C's agent, not one A looks up in its own store."""
    eve, back = three_domains_and_back(a, b, c, kit, clock)
    done = exchange(a, kit, back, eve.token)
    new = done.issued.claims
    assert new.sub == eve.sub and valid(a, done.token)
    assert [r.agent.split("/")[2] for r in new.delegation_chain] == [C, A, B]
    # Our operator's revocation of C's agent, by its SPIFFE ID, still stops the chain.
    carol = new.delegation_chain[0].agent
    a.revoke(kit.admin(a).claims, level="agent", target=carol, ctx=kit.ctx)
    exc = refused(a, InvalidRequest, lambda: exchange(a, kit, back, eve.token))
    assert "revoked here at level agent" in denial_detail(a, exc)


def test_a_task_we_revoked_ends_what_comes_back_carrying_it(
    a: Broker, b: Broker, c: Broker, kit: Any, clock: ManualClock
) -> None:
    """A revoked task ``t-c`` (its tokens carry C's task) after dave handed it on and
    before B's exchange: none of A's agents in the chain is of that task, yet what comes
    back is refused, by the task's registration time (``oiat``), not B's issue time."""

    def revoke(held: Any) -> None:
        a.revoke(kit.admin(a).claims, level="task", target="t-c", ctx=kit.ctx)
        assert not valid(a, held.token)

    eve, back = three_domains_and_back(a, b, c, kit, clock, revoke)
    exc = refused(a, InvalidRequest, lambda: exchange(a, kit, back, eve.token))
    assert "our task t-c of the chain revoked at level task" in denial_detail(a, exc)


# --- a peer naming one of our apps -------------------------------------------------------


def agent_of_app(broker: Broker, kit: Any, name: str, task_id: str) -> tuple[Any, Any]:
    """An app of ``broker`` named ``name``, and an agent registered under it."""
    admin = kit.admin(broker).claims
    app, secret = broker.register_app(
        admin, name=name, scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    launch, _ = broker.create_launch_token(
        broker.app_auth(app.client_id, secret, kit.ctx).claims, agent_name=name,
        allowed_scope=["read:data:*"], max_ttl=None, single_use=None, ttl=None, ctx=kit.ctx,
    )  # fmt: skip
    return app, kit.register(broker, launch, task_id=task_id)


def test_a_peer_cannot_name_one_of_our_apps_as_what_its_token_descends_from(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """An app of ours listed in a peer's lineage (``fed:<us>:app:<id>``) would be read as
    the app the new token descends from: its audit events', and the App the issuance
    policy sees its holder in, so a ``forbid`` on the holder's own app would not apply to
    what it hands on. Only an app one of our agents in the chain registered under is
    ours to name; here none is, so the exchange is refused, audited once."""
    from tasklease.core.policy import DEFAULT_POLICY, compile_policies

    federate(b, a, kit)
    payroll, _ = agent_of_app(b, kit, "payroll", "t-pay")
    bridge, bob = agent_of_app(b, kit, "bridge", "t-bob")
    carol = kit.register(b, scope=["read:data:*"], task_id="t-carol")
    rule = (
        '@id("bridge-hands-nothing-on")\n'
        f'forbid (principal in App::"{bridge.app_id}", action == Action::"delegate", resource);\n'
    )
    b.kernel.policy.use(compile_policies([("d.cedar", DEFAULT_POLICY), ("f.cedar", rule)], "t"))
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    honest = exchange(b, kit, minted_at_a(a, alice, clock), bob.token).issued.claims
    assert honest.lineage[-1] == f"app:{bridge.app_id}"
    with pytest.raises(TaskleaseError):  # the policy holds bob's app to its rule
        b.delegate(honest, delegate_to=carol.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx)
    forged = minted_at_a(a, alice, clock, lineage=(f"fed:{B}:app:{payroll.app_id}",))
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, forged, bob.token))
    assert f"names our app:{payroll.app_id}" in denial_detail(b, error)
    # A genuine chain that comes back keeps a vouched hop, yet may add no app either.
    victim = victim_of_b(b, kit)
    for_a = narrow(b, kit, victim.token, resource=f"spiffe://{A}", scope="read:data:1")
    seen = replace(
        for_a.issued.claims, lineage=(*for_a.issued.claims.lineage, f"app:{payroll.app_id}")
    )
    back, _ = hop_at_a(a, kit, clock, seen)
    error = refused(b, InvalidRequest, lambda: exchange(b, kit, back, bob.token))
    assert f"names our app:{payroll.app_id}" in denial_detail(b, error)


def test_a_chain_that_went_out_from_an_apps_agent_comes_back_descending_from_it(
    a: Broker, b: Broker, kit: Any, clock: ManualClock
) -> None:
    """The counterpart: our agent's token lists its app; what comes back lists it again,
    and removing the app ends it."""
    federate(b, a, kit)
    app, victim = agent_of_app(b, kit, "orders", "t-victim")
    for_a = narrow(b, kit, victim.token, resource=f"spiffe://{A}", scope="read:data:1")
    assert f"app:{app.app_id}" in for_a.issued.claims.lineage
    back, _ = hop_at_a(a, kit, clock, for_a.issued.claims)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    home = exchange(b, kit, back, bob.token)
    assert f"app:{app.app_id}" in home.issued.claims.lineage and valid(b, home.token)
    b.deregister_app(kit.admin(b).claims, app.app_id, kit.ctx)
    assert not valid(b, home.token)


@pytest.mark.parametrize("revoked", ["t-middle", "t-holder"])
def test_a_task_a_revokes_ends_what_b_derived_from_its_agents_of_that_task(
    a: Broker, b: Broker, kit: Any, revoked: str
) -> None:
    """A task revocation in A ends the tokens held by, or delegated through, A's agents
    of that task (their SPIFFE IDs name it), whatever the token's own ``task_id`` (its
    root's, ``t-root``): what B derived from such a token ends too, and it is exchanged
    no more."""
    federate(b, a, kit)
    root = kit.register(a, scope=["read:data:*"], task_id="t-root")
    middle = kit.register(a, scope=["read:data:*"], task_id="t-middle")
    holder = kit.register(a, scope=["read:data:*"], task_id="t-holder")
    first = a.delegate(
        root.claims, delegate_to=middle.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    second = a.delegate(
        first.claims, delegate_to=holder.sub, scope=["read:data:*"], ttl=None, ctx=kit.ctx
    )
    assert second.claims.task_id == "t-root"
    subject = for_domain(a, kit, second.token, B)
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    held = exchange(b, kit, subject, bob.token)
    assert valid(b, held.token)
    a.revoke(kit.admin(a).claims, level="task", target=revoked, ctx=kit.ctx)
    assert not valid(a, subject)  # A's own rule
    assert cross(a, b) == 1
    assert not valid(b, held.token)
    refused(b, InvalidRequest, lambda: exchange(b, kit, subject, bob.token))
    assert valid(b, bob.token)


@pytest.mark.parametrize("ended", ["removal", "its view of our token"])
def test_what_b_ends_of_what_it_derived_from_us_ends_what_came_back_through_b(
    a: Broker, b: Broker, kit: Any, ended: str
) -> None:
    """A→B→A: B ending what it derived from A (removing A's domain, or revoking its
    namespaced view of A's token, ``fed:a.example:<jti>``) ends, through B's feed, what
    came back to A through B, and A exchanges that token no more, as it would for any
    other revocation of B's."""
    federate(b, a, kit)
    federate(a, b, kit)
    alice = kit.register(a, scope=["read:data:*"], task_id="t-alice")
    bob = kit.register(b, scope=["read:data:*"], task_id="t-bob")
    dave = kit.register(a, scope=["read:data:*"], task_id="t-dave")
    at_b = exchange(b, kit, for_domain(a, kit, alice.token, B), bob.token)
    back = for_domain(b, kit, at_b.token, A)
    home = exchange(a, kit, back, dave.token)
    if ended == "removal":
        b.federation.remove(kit.admin(b).claims, A, kit.ctx)
    else:
        b.revoke(kit.admin(b).claims, level="chain", target=f"fed:{A}:{alice.claims.jti}",
                 ctx=kit.ctx)  # fmt: skip
    assert not valid(b, at_b.token) and not valid(b, back)  # B's own rule
    assert valid(a, home.token) and valid(a, alice.token)
    assert cross(b, a) >= 1
    assert not valid(a, home.token)
    erin = kit.register(a, scope=["read:data:*"], task_id="t-erin")
    refused(a, InvalidRequest, lambda: exchange(a, kit, back, erin.token))
    assert valid(a, alice.token)  # B reaches only what came back through it
