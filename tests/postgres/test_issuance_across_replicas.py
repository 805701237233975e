# Would fail if: a registration, delegation, renewal or resumption on a replica that had
# not applied another's revocation entry yet were answered with a token born revoked and
# audited as issued, instead of refused (decision 353's rule, read in the issuance's write).
"""What an entry committed on one replica would end at birth is refused on another that
has not applied it yet, as on the replica that wrote it: a registration right after its
task was revoked (503 with a ``retry_after``, audited once with its ``denial_id``, the
nonce not spent), a delegation right after the delegator's delegations were revoked; and
a renewal, resumption or delegation by an agent whose agent or task was revoked (refused
as the replica that wrote the entry refuses it). Two brokers on one PostgreSQL database,
neither following the other's notifications: the widest form of the moment between a
commit on one replica and its notification on the other."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized, Unavailable
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.keys import KeyRing
from tasklease.core.records import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, Claims, mint
from tasklease.storage.postgres import PostgresStore

CTX = RequestContext(request_id="req-pg", remote="127.0.0.1", path="/v1/test")


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[Broker, Broker, ManualClock]]:
    clock = ManualClock(1_800_000_000.0)
    keys = KeyRing.generate()
    made = [
        Broker(
            Config(), PostgresStore(pg_url, pool_max=2), keys, clock=clock, nonce_secret=b"p" * 32
        )
        for _ in range(2)
    ]
    try:
        yield made[0], made[1], clock
    finally:
        for broker in made:
            broker.store.close()


def _admin(broker: Broker, clock: ManualClock) -> Claims:
    cfg = broker.config
    _, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub="admin",
        aud=cfg.audience,
        iat=int(clock.now()),
        ttl=300,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    return claims


def _launch(broker: Broker, admin: Claims) -> str:
    token, _ = broker.create_launch_token(
        admin,
        agent_name="replicated",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=False,
        ttl=3600,
        ctx=CTX,
    )
    return token


def _registration(broker: Broker, launch: str, task: str) -> dict[str, Any]:
    key = SigningKey.generate()
    nonce, _ = broker.challenge()
    return {
        "launch_token": launch,
        "nonce": nonce,
        "public_key": _b64(bytes(key.verify_key)),
        "signature": _b64(key.sign(bytes.fromhex(nonce)).signature),
        "orch_id": "orch-pg",
        "task_id": task,
        "requested_scope": ["read:data:*"],
        "ctx": CTX,
    }


def _audited_once(broker: Broker, caught: Exception, event_type: str) -> str:
    denial_id = getattr(caught, "denial_id", None)
    assert denial_id
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    named = [e for e in events if e.detail.endswith(f"denial={denial_id}")]
    assert [(e.event_type, e.outcome) for e in named] == [(event_type, "denied")]
    return named[0].detail


def _refused_once(broker: Broker, caught: Unavailable, event_type: str) -> str:
    assert caught.retry_after and caught.retry_after > 1
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    named = [e for e in events if e.detail.endswith(f"denial={caught.denial_id}")]
    assert [(e.event_type, e.outcome) for e in named] == [(event_type, "denied")]
    return named[0].detail


def test_a_registration_waits_out_its_tasks_revocation_on_the_other_replica(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    launch = _launch(a, admin)
    task = f"task-{secrets.token_hex(4)}"
    b.register(**_registration(b, launch, task))
    a.revoke(admin, level="task", target=task, ctx=CTX)
    request = _registration(b, launch, task)
    with pytest.raises(Unavailable) as caught:
        b.register(**request)
    assert "revoked moments ago" in caught.value.detail
    detail = _refused_once(b, caught.value, "registration_failed")
    assert "task revoked moments ago" in detail
    registered = [e for e in b.audit_events(AuditQuery(limit=1000))[0]]
    assert [e.event_type for e in registered].count("agent_registered") == 1
    # Its nonce was not spent: the same request is answered the same, not "consumed", by
    # the halves an event loop runs too.
    with pytest.raises(Unavailable) as again_caught:
        asyncio.run(b.complete_register(b.prepare_register(**request)))
    _refused_once(b, again_caught.value, "registration_failed")
    # Once the entry is past, a run of the task registers on either replica.
    clock.advance(caught.value.retry_after or 0)
    again = b.register(**_registration(b, launch, task))
    assert again.claims.task_id == task


def test_a_delegation_waits_out_the_delegators_chain_entry_on_the_other_replica(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    launch = _launch(a, admin)
    delegator = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    delegate = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    clock.advance(a.config.clock_skew + 5)
    a.revoke(admin, level="chain", target=delegator.claims.sub, ctx=CTX)
    with pytest.raises(Unavailable) as caught:
        b.delegate(
            delegator.claims,
            delegate_to=delegate.claims.sub,
            scope=["read:data:x"],
            ttl=None,
            ctx=CTX,
        )
    assert "revoked moments ago" in caught.value.detail
    detail = _refused_once(b, caught.value, "delegation_denied")
    assert "delegations revoked moments ago" in detail
    events = b.audit_events(AuditQuery(limit=1000))[0]
    assert "delegation_created" not in [e.event_type for e in events]


def _revoked_agent(
    pair: tuple[Broker, Broker, ManualClock], level: str
) -> tuple[Broker, Any, dict[str, Any], SigningKey]:
    """An agent registered on B, then revoked at ``level`` (its id, its token, or its
    task) on A."""
    a, b, clock = pair
    admin = _admin(a, clock)
    key = SigningKey.generate()
    request = _registration(b, _launch(a, admin), f"task-{secrets.token_hex(4)}")
    nonce = request["nonce"]
    request["public_key"] = _b64(bytes(key.verify_key))
    request["signature"] = _b64(key.sign(bytes.fromhex(nonce)).signature)
    agent = b.register(**request)
    clock.advance(a.config.clock_skew + 5)
    target = {"agent": agent.claims.sub, "token": agent.claims.jti}.get(level, agent.claims.task_id)
    a.revoke(admin, level=level, target=target, ctx=CTX)
    return b, agent, request, key


def _issued(broker: Broker) -> list[str]:
    return [e.event_type for e in broker.audit_events(AuditQuery(limit=1000))[0]]


@pytest.mark.parametrize("level", ["agent", "task"])
def test_a_renewal_of_a_token_revoked_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock], level: str
) -> None:
    b, agent, _, _ = _revoked_agent(pair, level)
    with pytest.raises(Unauthorized) as caught:
        b.renew(agent.claims, CTX)
    detail = _audited_once(b, caught.value, "token_renewal_failed")
    assert f"revoked at level {level}" in detail
    assert "token_renewed" not in _issued(b)


@pytest.mark.parametrize("level", ["agent", "task"])
def test_a_resumption_of_an_agent_revoked_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock], level: str
) -> None:
    b, agent, _, key = _revoked_agent(pair, level)
    nonce, _ = b.challenge()
    with pytest.raises(Forbidden) as caught:
        b.resume(
            agent_id=agent.claims.sub,
            nonce=nonce,
            signature=_b64(key.sign(bytes.fromhex(nonce)).signature),
            ctx=CTX,
        )
    detail = _audited_once(b, caught.value, "agent_resume_denied")
    # An agent-level revocation also marks the agent's record, which the resumption
    # reads from the store; a task-level one is only its entry.
    assert ("agent is revoked" if level == "agent" else "revoked at level task") in detail
    assert "agent_resumed" not in _issued(b)


def test_a_delegation_by_an_agent_revoked_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    launch = _launch(a, _admin(a, clock))
    delegate = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    b, delegator, _, _ = _revoked_agent(pair, "agent")
    with pytest.raises(Unauthorized) as caught:
        b.delegate(
            delegator.claims,
            delegate_to=delegate.claims.sub,
            scope=["read:data:x"],
            ttl=None,
            ctx=CTX,
        )
    detail = _audited_once(b, caught.value, "token_auth_failed")
    assert "revoked at level agent" in detail
    assert "delegation_created" not in _issued(b)


# --- what decision 367 left: lineage ancestors, a delegator's entries, token exchange ----


def test_a_registration_under_a_lineage_ended_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    """A chain entry on a registration's lineage ancestor (here its app's, ``app:<id>``:
    an attestation's or a federated domain's are read the same way) ends every token
    listing it, whenever issued: the replica that has not applied it refuses as the one
    that wrote it does, the refusal audited once."""
    a, b, clock = pair
    admin = _admin(a, clock)
    app, secret = a.register_app(
        admin, name="replicated-app", scopes=["read:data:*"], token_ttl=None, ctx=CTX
    )
    launch, _ = a.create_launch_token(
        a.app_auth(app.client_id, secret, CTX).claims,
        agent_name="replicated",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=False,
        ttl=3600,
        ctx=CTX,
    )
    b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    a.revoke(admin, level="chain", target=f"app:{app.app_id}", ctx=CTX)
    with pytest.raises(Unauthorized) as on_a:
        a.register(**_registration(a, launch, f"task-{secrets.token_hex(4)}"))
    with pytest.raises(Unauthorized) as caught:
        b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    assert caught.value.detail == on_a.value.detail
    detail = _audited_once(b, caught.value, "registration_failed")
    assert f"app:{app.app_id}" in detail
    assert _issued(b).count("agent_registered") == 1


_DELEGATOR_ENDED = {
    # what A revokes: (level, whose) -> the level at which the delegated token is ended
    "token": ("token", "chain"),  # the delegator's token: a chain entry on its jti
    "agent": ("agent", "agent"),  # the delegator
    "chain": ("chain", "chain"),  # the delegator's delegations
    "delegate-task": ("task", "task"),  # the holder's own task
}


@pytest.mark.parametrize("ended", sorted(_DELEGATOR_ENDED))
def test_a_renewal_of_a_delegated_token_ended_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock], ended: str
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    launch = _launch(a, admin)
    delegator = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    delegate = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    held = b.delegate(
        delegator.claims, delegate_to=delegate.claims.sub, scope=["read:data:x"], ttl=None, ctx=CTX
    )
    clock.advance(a.config.clock_skew + 5)
    level, matched = _DELEGATOR_ENDED[ended]
    target = {
        "token": delegator.claims.jti,
        "agent": delegator.claims.sub,
        "chain": delegator.claims.sub,
        "task": delegate.claims.task_id,
    }[level]
    a.revoke(admin, level=level, target=target, ctx=CTX)
    with pytest.raises(Unauthorized) as caught:
        b.renew(held.claims, CTX)
    detail = _audited_once(b, caught.value, "token_renewal_failed")
    assert f"revoked at level {matched}" in detail
    assert "token_renewed" not in _issued(b)


def test_a_delegation_to_an_agent_whose_task_was_revoked_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock],
) -> None:
    a, b, clock = pair
    admin = _admin(a, clock)
    launch = _launch(a, admin)
    delegator = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    delegate = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    clock.advance(a.config.clock_skew + 5)
    a.revoke(admin, level="task", target=delegate.claims.task_id, ctx=CTX)
    asked = {"delegate_to": delegate.claims.sub, "scope": ["read:data:x"], "ttl": None}
    with pytest.raises(NotFound) as on_a:
        a.delegate(delegator.claims, **asked, ctx=CTX)
    with pytest.raises(NotFound) as caught:
        b.delegate(delegator.claims, **asked, ctx=CTX)
    assert caught.value.detail == on_a.value.detail
    detail = _audited_once(b, caught.value, "delegation_denied")
    assert "revoked at level task" in detail
    assert "delegation_created" not in _issued(b)


@pytest.mark.parametrize("level", ["token", "agent", "task"])
def test_a_token_exchange_of_a_token_revoked_on_the_other_replica_is_refused(
    pair: tuple[Broker, Broker, ManualClock], level: str
) -> None:
    b, agent, _, _ = _revoked_agent(pair, level)
    request = ExchangeRequest(
        grant_type=GRANT_TYPE,
        subject_token=agent.token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read:data:x",
    )
    with pytest.raises(InvalidRequest) as caught:
        b.exchange_token(request, CTX)
    detail = _audited_once(b, caught.value, "token_exchange_denied")
    # An agent-level revocation also marks the agent's record, which the exchange reads
    # from the store; a token's and a task's are only their entries.
    ended = {"token": "revoked at level chain", "agent": "agent is revoked"}
    assert ended.get(level, f"revoked at level {level}") in detail
    assert "token_exchanged" not in _issued(b)


@pytest.mark.parametrize("ended", ["release", "token"])
def test_a_delegation_by_a_token_ended_on_the_other_replica_is_refused_as_the_delegators(
    pair: tuple[Broker, Broker, ManualClock], ended: str
) -> None:
    """A delegator whose token was released (or revoked at level ``token``) on the other
    replica has nothing left to hand on: refused as the replica that ended it refuses it
    (401, ``token_auth_failed``), not as if its live delegate were gone (404)."""
    a, b, clock = pair
    admin = _admin(a, clock)
    launch = _launch(a, admin)
    delegator = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    delegate = b.register(**_registration(b, launch, f"task-{secrets.token_hex(4)}"))
    clock.advance(a.config.clock_skew + 5)
    if ended == "release":
        a.release(delegator.claims, CTX)
    else:
        a.revoke(admin, level="token", target=delegator.claims.jti, ctx=CTX)
    asked = {"delegate_to": delegate.claims.sub, "scope": ["read:data:x"], "ttl": None}
    with pytest.raises(Unauthorized) as on_a:
        a.delegate(delegator.claims, **asked, ctx=CTX)
    with pytest.raises(Unauthorized) as caught:
        b.delegate(delegator.claims, **asked, ctx=CTX)
    assert caught.value.detail == on_a.value.detail
    detail = _audited_once(b, caught.value, "token_auth_failed")
    assert "delegator has nothing to hand on" in detail
    assert "delegation_created" not in _issued(b)
