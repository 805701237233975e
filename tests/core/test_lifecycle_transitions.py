# Would fail if: a transition out of a lifecycle state (a counted grant spent, an agent
# done, swept or revoked, a token renewed) gave back authority the rules say is gone.
"""Lifecycle transitions in the kernel, with a manual clock: what ends stays ended.

A grant's spent ``max_calls`` stays spent across renewal, resumption, narrowing and a
new delegation of the same grant; an agent that declared itself done, was swept as
silent or revoked at agent or task level gets nothing more by any path (renew, delegate,
narrow, resume, being delegated to); a renewal chain never passes the registration's
ceiling. tests/security/test_lifecycle_transitions.py walks the same states over HTTP.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from tests.core.conftest import declare_done
from tests.core.test_call_budget_threads import GRANT, launched

from tasklease.core.errors import Forbidden, TaskleaseError
from tasklease.core.exchange import ExchangeRequest
from tasklease.core.validation import TokenRejected

CALL = {"action": "read", "location": "https://rs.example/x"}
TT = "urn:ietf:params:oauth:token-type:access_token"


def _count(broker: Any, kit: Any, token: str) -> Any:
    return broker.count_call(
        token, kind="resource_access", call=CALL, audience=None, presented=None, ctx=kit.ctx
    )[1]


def _resume(broker: Any, kit: Any, agent: Any) -> Any:
    nonce = broker.challenge()[0]
    signature = agent.key.sign(bytes.fromhex(nonce)).signature
    return broker.resume(
        agent_id=agent.sub, nonce=nonce, signature=base64.b64encode(signature).decode(), ctx=kit.ctx
    )


class A:
    def __init__(self, issued: Any, key: Any) -> None:
        self.issued, self.key = issued, key
        self.token, self.claims, self.sub = issued.token, issued.claims, issued.claims.sub


def reg(broker: Any, kit: Any, launch: str, task: str) -> A:
    args, key = kit.register_args(broker, launch, (), task_id=task)
    return A(broker.register(**args, authorization_details=[GRANT]), key)


def test_max_calls_survive_renew_and_resume(broker: Any, kit: Any) -> None:
    a = reg(broker, kit, launched(broker, kit), "t1")
    assert [_count(broker, kit, a.token).remaining for _ in range(2)] == [1, 0]
    r = broker.renew(a.claims, kit.ctx)
    with pytest.raises(Forbidden):
        _count(broker, kit, r.token)
    s = _resume(broker, kit, a)
    with pytest.raises(Forbidden):
        _count(broker, kit, s.token)
    n = broker.exchange_token(
        ExchangeRequest(
            grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
            subject_token=s.token,
            subject_token_type=TT,
        ),
        kit.ctx,
    )
    with pytest.raises(Forbidden):
        _count(broker, kit, n.token)


def test_delegated_max_calls_survive_renew_and_redelegation(broker: Any, kit: Any) -> None:
    launch = launched(broker, kit)
    a, b = reg(broker, kit, launch, "t1"), reg(broker, kit, launch, "t2")
    d = broker.delegate(
        a.claims,
        delegate_to=b.sub,
        scope=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=[GRANT],
    )
    assert [_count(broker, kit, d.token).remaining for _ in range(2)] == [1, 0]
    dr = broker.renew(d.claims, kit.ctx)
    with pytest.raises(Forbidden):
        _count(broker, kit, dr.token)
    d2 = broker.delegate(
        a.claims,
        delegate_to=b.sub,
        scope=None,
        ttl=None,
        ctx=kit.ctx,
        authorization_details=[GRANT],
    )
    with pytest.raises(Forbidden):
        _count(broker, kit, d2.token)
    with pytest.raises(Forbidden):
        _count(broker, kit, a.token)


def test_after_done_nothing_issues(broker: Any, kit: Any) -> None:
    a = kit.register(broker)
    other = kit.register(broker, task_id="task-2")
    s = _resume(broker, kit, a)  # a second live token
    declare_done(broker, kit.ctx, a, a.claims)
    for attempt in (
        lambda: broker.renew(s.claims, kit.ctx),
        lambda: broker.delegate(
            s.claims, delegate_to=other.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
        ),
        lambda: _resume(broker, kit, a),
        lambda: broker.exchange_token(
            ExchangeRequest(
                grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
                subject_token=s.token,
                subject_token_type=TT,
            ),
            kit.ctx,
        ),
        lambda: broker.delegate(
            other.claims, delegate_to=a.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
        ),
    ):
        with pytest.raises(TaskleaseError):
            attempt()


def test_sweep_then_everything_refused(make_broker: Any, kit: Any) -> None:
    broker = make_broker(heartbeat_required=True, heartbeat_interval=10, heartbeat_misses=2)
    a = kit.register(broker)
    b = kit.register(broker, task_id="task-2")
    d = broker.delegate(b.claims, delegate_to=a.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx)
    broker.clock.advance(25)
    swept = broker.sweep_silent_agents()
    assert a.sub in swept
    for t in (a.token, d.token):
        with pytest.raises(TokenRejected):
            broker.validate(t)
    with pytest.raises(TaskleaseError):
        _resume(broker, kit, a)


def test_revoke_levels_block_resume(broker: Any, kit: Any) -> None:
    adm = kit.admin(broker).claims
    for level, target in (("agent", None), ("task", "task-x")):
        a = kit.register(broker, task_id="task-x" if level == "task" else "task-y")
        broker.clock.advance(1)
        broker.revoke(adm, level=level, target=target or a.sub, ctx=kit.ctx)
        broker.clock.advance(5)
        with pytest.raises(TaskleaseError):
            _resume(broker, kit, a)


def test_revoke_token_of_another_agent(broker: Any, kit: Any) -> None:
    a = kit.register(broker)
    b = kit.register(broker, task_id="task-2")
    with pytest.raises(TaskleaseError):
        broker.revoke_token(b.claims, token=a.token, token_type_hint=None, ctx=kit.ctx)
    assert broker.validate(a.token)


def test_renewal_lineage_never_outlives_ceiling(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_renewals=1000, renewal_ceiling=300, default_ttl=60, max_ttl=60)
    a = kit.register(broker)
    c = a.claims
    last = c
    for _ in range(20):
        broker.clock.advance(50)
        try:
            last = broker.renew(last, kit.ctx).claims
        except TaskleaseError:
            break
    assert last.exp <= c.oiat + 300
