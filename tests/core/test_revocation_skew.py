"""Agent, task and chain-on-agent revocation entries end what any clock within the skew
made before them (docs/decisions.md 142).

What such an entry is compared with (a registration's ``oiat``, a token's ``iat``, a hop's
``delegated_at``) was read from the clock of the process that made it, which the product
tolerates up to ``clock_skew`` ahead of the revoking process's: another replica, or this
one before its clock stepped back. Dated by the revoking clock alone, the entry missed
what was made in that margin: the revocation answered 200 and the tokens lived on until
their registration's lifetime ceiling. The kernel now dates such an entry ``clock_skew``
past its revoking clock's second, and what would be issued for its target until then is
refused with ``Retry-After`` rather than born revoked.

Two brokers on one store stand for two replicas, the one that registers ``AHEAD`` seconds
ahead of the one that revokes (within the 30 s skew); verifiers are a ``RevocationIndex``
fed the broker's revocation feed, as offline verifiers are.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.errors import InvalidRequest, TaskleaseError, Unauthorized, Unavailable
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.keys import KeyRing
from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import AuditQuery
from tasklease.core.validation import TokenRejected
from tasklease.storage import MemoryStore
from tasklease.verify._claims import parse_claims

START = 1_800_000_000.0
CTX = RequestContext(request_id="req-skew", remote="127.0.0.1", path="/v1/test")
AHEAD = 20  # how far the registering replica's clock runs ahead (clock_skew is 30)


@dataclass
class Replicas:
    fast: Broker  # registers, renews, delegates: its clock AHEAD seconds ahead
    slow: Broker  # revokes

    def advance(self, seconds: float) -> None:
        for broker in (self.fast, self.slow):
            broker.clock.advance(seconds)  # type: ignore[attr-defined]

    @property
    def skew(self) -> int:
        return self.slow.config.clock_skew


def _replicas(make_broker: Any, **config: Any) -> Replicas:
    store, ring = MemoryStore(), KeyRing.generate()
    fast = make_broker(store=store, keyring=ring, clock=ManualClock(START + AHEAD), **config)
    slow = make_broker(store=store, keyring=ring, clock=ManualClock(START), **config)
    return Replicas(fast, slow)


@pytest.fixture
def replicas(make_broker: Any) -> Replicas:
    return _replicas(make_broker)


def valid(broker: Broker, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return False
    return True


def verifier_match(broker: Broker, token: str) -> str | None:
    """What an offline verifier following ``broker``'s revocation feed decides."""
    index = RevocationIndex()
    index.apply(broker.revocation_feed(None).records)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return index.match(parse_claims(payload))


def ended_everywhere(r: Replicas, token: str, level: str) -> None:
    """Refused by the replica that revoked, by the other once it read the store, and by
    a verifier following the feed, all at ``level``. (An operator's or an app's token is
    presented where such tokens are taken; the refusal's event says why.)"""
    r.fast.refresh_revocations()
    for broker in (r.slow, r.fast):
        with pytest.raises(Unauthorized) as refused:
            broker.authenticate(f"Bearer {token}", CTX)
        assert f"revoked (level {level})" in refused_once(
            broker, refused.value, "token_auth_failed"
        )
    assert verifier_match(r.slow, token) == level


def revoke(broker: Broker, kit: Any, level: str, target: str) -> None:
    assert broker.revoke(kit.admin(broker).claims, level=level, target=target, ctx=kit.ctx) == 1


def delegate(broker: Broker, kit: Any, claims: Any, to: str) -> Any:
    return broker.delegate(claims, delegate_to=to, scope=["read:data:*"], ttl=None, ctx=kit.ctx)


def refused_once(broker: Broker, error: TaskleaseError, event_type: str) -> str:
    """``error`` carries a denial id that names exactly one audit event; its detail."""
    assert error.denial_id
    events, _ = broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))
    (hit,) = [e for e in events if e.detail.endswith(f"denial={error.denial_id}")]
    return hit.detail


# --- what was made ahead, before the revocation, is ended -------------------------------


def test_an_agent_revoked_on_a_slower_replica_is_ended_with_what_it_renewed(
    replicas: Replicas, kit: Any
) -> None:
    r = replicas
    agent = kit.register(r.fast)
    assert agent.claims.oiat == int(START) + AHEAD
    # A renewal the fast replica made just before the entry was written (with its own,
    # later iat; the renewal ends its predecessor by its jti).
    renewed = r.fast.renew(r.fast.validate(agent.token), kit.ctx)
    assert renewed.claims.iat > int(START)
    revoke(r.slow, kit, "agent", agent.sub)
    assert not valid(r.slow, agent.token)
    ended_everywhere(r, renewed.token, "agent")
    assert not valid(r.fast, agent.token)
    # One it tries once the entry is written, its token checked before it read the entry,
    # reads the entry in its own write and is refused (docs/decisions.md 353).
    with pytest.raises(Unauthorized) as refused:
        r.fast.renew(renewed.claims, kit.ctx)
    assert "revoked at level agent" in refused_once(r.fast, refused.value, "token_renewal_failed")
    (entry,) = r.slow.store.find_revocations([("agent", agent.sub)])
    assert entry.revoked_at == int(START) + r.skew  # the revoking clock's second + skew


def test_a_task_revoked_on_a_slower_replica_ends_its_agents_and_what_they_were_handed(
    replicas: Replicas, kit: Any
) -> None:
    """The task's own tokens (by ``oiat``), a token another task's agent handed one of its
    agents (by the token's ``iat``) and what that agent handed on (by the hop's
    ``delegated_at``), all made on the replica ahead (decision 134's matches)."""
    r = replicas
    worker = kit.register(r.fast, task_id="task-a")
    other = kit.register(r.fast, task_id="task-b")
    third = kit.register(r.fast, task_id="task-c")
    handed = delegate(r.fast, kit, other.claims, worker.sub)  # held by task-a's agent
    onward = delegate(r.fast, kit, handed.claims, third.sub)  # through task-a's agent
    revoke(r.slow, kit, "task", "task-a")
    for token in (worker.token, handed.token, onward.token):
        ended_everywhere(r, token, "task")
    assert valid(r.slow, other.token) and valid(r.slow, third.token)


def test_a_chain_revoked_on_a_slower_replica_ends_a_delegation_made_just_before(
    replicas: Replicas, kit: Any
) -> None:
    r = replicas
    root = kit.register(r.slow)
    helper = kit.register(r.slow, task_id="task-2")
    r.fast.refresh_revocations()
    hop = delegate(r.fast, kit, root.claims, helper.sub)  # delegated_at by the fast clock
    revoke(r.slow, kit, "chain", root.sub)
    ended_everywhere(r, hop.token, "chain")
    assert valid(r.slow, root.token)  # the root's own token lives on


def test_a_token_handed_on_is_not_renewed_or_narrowed_past_its_delegators_end_elsewhere(
    replicas: Replicas, kit: Any
) -> None:
    """The delegator's token ended on the other replica (a chain entry on its ``jti``,
    which the delegated token lists in its lineage): the replica that has not applied it
    reads it in the renewal's and the exchange's own write and refuses, rather than
    answering with a token the entry ends on arrival (docs/decisions.md 367)."""
    r = replicas
    root = kit.register(r.fast, task_id="task-a")
    helper = kit.register(r.fast, task_id="task-b")
    held = delegate(r.fast, kit, root.claims, helper.sub)
    revoke(r.slow, kit, "token", root.claims.jti)
    with pytest.raises(Unauthorized) as renewal:
        r.fast.renew(held.claims, kit.ctx)
    assert "revoked at level chain" in refused_once(r.fast, renewal.value, "token_renewal_failed")
    request = ExchangeRequest(
        grant_type=GRANT_TYPE, subject_token=held.token, subject_token_type=ACCESS_TOKEN_TYPE
    )
    with pytest.raises(InvalidRequest) as narrowing:
        r.fast.exchange_token(request, kit.ctx)
    assert "revoked at level chain" in refused_once(
        r.fast, narrowing.value, "token_exchange_denied"
    )
    ended_everywhere(r, held.token, "chain")


@pytest.mark.parametrize("level", ["agent", "task"])
def test_a_clock_stepped_back_still_ends_what_it_issued_before(
    broker: Broker, kit: Any, clock: ManualClock, level: str
) -> None:
    """The reviewer's probe: one broker, its clock stepped back 20 s (NTP) after the agent
    registered; the revocation answers 200, and the token is ended, then and later."""
    agent = kit.register(broker, task_id=f"task-{level}")
    clock.set(START - AHEAD)
    assert valid(broker, agent.token)  # iat within the skew of the clock
    target = agent.sub if level == "agent" else agent.claims.task_id
    revoke(broker, kit, level, target)
    assert not valid(broker, agent.token)
    clock.set(START + 60)  # the clock correct again, the token within its exp
    assert not valid(broker, agent.token)
    assert verifier_match(broker, agent.token) == level


def test_the_silent_agent_sweep_on_a_slower_replica_ends_what_the_agent_was_handed(
    make_broker: Any, kit: Any
) -> None:
    """The sweeper dates its agent entry as every revocation is dated: a token handed to
    the silent agent on the replica ahead, by a root registered there moments before, is
    ended with it (the token carries that root's ``oiat``)."""
    r = _replicas(make_broker, heartbeat_required=True)
    silent = kit.register(r.slow)
    r.advance(100)  # silent past 3 x 30 s
    r.fast.refresh_revocations()
    root = kit.register(r.fast, task_id="task-root")
    handed = delegate(r.fast, kit, root.claims, silent.sub)
    assert handed.claims.oiat > int(r.slow.clock.now())
    assert r.slow.sweep_silent_agents() == [silent.sub]
    ended_everywhere(r, handed.token, "agent")
    ended_everywhere(r, silent.token, "agent")
    (entry,) = r.slow.store.find_revocations([("agent", silent.sub)])
    assert entry.revoked_at == int(r.slow.clock.now()) + r.skew


def test_an_operator_rotated_on_a_slower_replica_loses_a_token_signed_in_ahead(
    replicas: Replicas, kit: Any
) -> None:
    r = replicas
    admin = r.slow.admin_auth(kit.admin_secret, kit.ctx).claims
    _, secret = r.slow.add_operator(
        admin, name="alice", role="operator", public_key=None, ctx=kit.ctx
    )
    ahead, _ = r.fast.operator_auth(
        name="alice", secret=secret, nonce=None, signature=None, ctx=kit.ctx
    )
    _, new_secret = r.slow.rotate_operator(admin, "alice", public_key=None, ctx=kit.ctx)
    ended_everywhere(r, ahead.token, "agent")
    # The new secret signs in once the entry is past, by the clock that signs it in.
    with pytest.raises(Unavailable) as soon:
        r.fast.operator_auth(
            name="alice", secret=new_secret, nonce=None, signature=None, ctx=kit.ctx
        )
    assert soon.value.retry_after == r.skew + 1 - AHEAD
    r.advance(soon.value.retry_after)
    issued, _ = r.fast.operator_auth(
        name="alice", secret=new_secret, nonce=None, signature=None, ctx=kit.ctx
    )
    assert r.slow.authenticate(kit.bearer(issued.token), kit.ctx).sub == "operator:alice"


@pytest.mark.parametrize("change", ["new key", "new secret", "deregistration"])
def test_an_app_changed_on_a_slower_replica_loses_a_token_signed_in_ahead(
    replicas: Replicas, kit: Any, change: str
) -> None:
    r = replicas
    admin = kit.admin(r.slow).claims
    app, secret = r.slow.register_app(
        admin, name="bot", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    ahead = r.fast.app_auth(app.client_id, secret, kit.ctx)
    if change == "new key":
        key = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
        r.slow.update_app(
            admin, app.app_id, scopes=None, token_ttl=None, public_key=key, ctx=kit.ctx
        )
    elif change == "new secret":
        r.slow.rotate_app_secret(admin, app.app_id, kit.ctx)
    else:
        r.slow.deregister_app(admin, app.app_id, kit.ctx)
    ended_everywhere(r, ahead.token, "agent")


# --- the entry's time ----------------------------------------------------------------------


def test_revoked_at_is_never_behind_the_revoking_clock_and_only_widens(
    replicas: Replicas, kit: Any
) -> None:
    r = replicas
    agent = kit.register(r.fast)
    revoke(r.slow, kit, "task", "task-1")
    revoke(r.fast, kit, "task", "task-1")  # the replica ahead widens it to its own time
    revoke(r.slow, kit, "task", "task-1")  # and the one behind never narrows it
    (entry,) = r.slow.store.find_revocations([("task", "task-1")])
    assert entry.revoked_at == int(START) + AHEAD + r.skew
    for broker in (r.slow, r.fast):
        broker.refresh_revocations()
        assert broker.revocations.revoked_at("task", "task-1") == entry.revoked_at
    assert [e.revoked_at for e in r.slow.revocation_feed(None).records] == [entry.revoked_at]
    # A token's entry matches by its id: dated by the revoking clock alone, as before.
    revoke(r.slow, kit, "token", agent.claims.jti)
    token, chain = r.slow.store.find_revocations(
        [("token", agent.claims.jti), ("chain", agent.claims.jti)]
    )
    assert token.revoked_at == chain.revoked_at == int(START)


# --- what is made for the target after the entry ---------------------------------------------


def test_a_new_run_of_a_revoked_task_registers_once_the_entry_is_past(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    """Task ids are used again (decision 134). Until ``clock_skew`` past the task's
    revocation, a new run cannot be told from one a clock ahead registered before it: its
    token would be born revoked, so its registration is refused (503, ``Retry-After``),
    audited once, with nothing spent: the same single-use launch token registers after."""
    old = kit.register(broker, task_id="task-r")
    revoke(broker, kit, "task", "task-r")
    skew = broker.config.clock_skew
    clock.advance(5)
    launch = kit.launch(broker)
    with pytest.raises(Unavailable) as soon:
        kit.register(broker, launch, task_id="task-r")
    assert soon.value.retry_after == skew + 1 - 5
    assert f"may register in {skew + 1 - 5} s" in str(soon.value.detail)
    detail = refused_once(broker, soon.value, "registration_failed")
    assert "task revoked moments ago" in detail
    assert valid(broker, kit.register(broker, task_id="task-other").token)  # others register
    clock.advance(soon.value.retry_after - 1)
    with pytest.raises(Unavailable) as still:
        kit.register(broker, launch, task_id="task-r")
    assert still.value.retry_after == 1
    clock.advance(1)
    run = kit.register(broker, launch, task_id="task-r")  # the launch token was not spent
    assert valid(broker, run.token)
    assert valid(broker, broker.renew(run.claims, kit.ctx).token)
    assert not valid(broker, old.token)


def test_a_new_run_on_a_replica_ahead_waits_by_its_own_clock(replicas: Replicas, kit: Any) -> None:
    r = replicas
    revoke(r.slow, kit, "task", "task-r")
    r.fast.refresh_revocations()
    with pytest.raises(Unavailable) as soon:
        kit.register(r.fast, task_id="task-r")
    assert soon.value.retry_after == r.skew + 1 - AHEAD
    r.advance(soon.value.retry_after)
    run = kit.register(r.fast, task_id="task-r")
    for broker in (r.fast, r.slow):
        assert valid(broker, run.token)
    assert verifier_match(r.slow, run.token) is None


def test_a_chain_revoked_agent_delegates_again_once_the_entry_is_past(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    root = kit.register(broker)
    helper = kit.register(broker, task_id="task-2")
    revoke(broker, kit, "chain", root.sub)
    clock.advance(3)
    with pytest.raises(Unavailable) as soon:
        delegate(broker, kit, root.claims, helper.sub)
    assert soon.value.retry_after == broker.config.clock_skew + 1 - 3
    assert "delegations revoked moments ago" in refused_once(
        broker, soon.value, "delegation_denied"
    )
    clock.advance(soon.value.retry_after)
    fresh = delegate(broker, kit, root.claims, helper.sub)
    assert valid(broker, fresh.token)


def test_an_agent_revoked_moments_ago_is_refused_as_ever(
    broker: Broker, kit: Any, clock: ManualClock
) -> None:
    """A revoked agent's own token is refused outright (401), not asked to come back: only
    what a new registration, sign-in or delegation would be born into waits."""
    agent = kit.register(broker)
    revoke(broker, kit, "agent", agent.sub)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(agent.token), kit.ctx)
    clock.advance(broker.config.clock_skew + 1)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(agent.token), kit.ctx)
