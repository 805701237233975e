"""A registration's lifetime ceiling is the configured one, for a resumption as for a
renewal: a broker restarted with a lower ``renewal_ceiling`` holds the agents it already
registered to it (docs/configuration.md: no token of a registration lives past
registration + ``renewal_ceiling``)."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.clock import ManualClock
from tasklease.core.errors import RenewalCeilingExceeded
from tasklease.core.keys import KeyRing
from tasklease.core.store import AuditQuery
from tasklease.storage import MemoryStore

from .conftest import START, b64

HOUR = 3600


def _resume(broker: Any, kit: Any, agent: Any) -> Any:
    nonce, _ = broker.challenge()
    return broker.resume(
        agent_id=agent.sub,
        nonce=nonce,
        signature=b64(agent.key.sign(bytes.fromhex(nonce)).signature),
        ctx=kit.ctx,
    )


def _restarted(make_broker: Any, kit: Any) -> tuple[Any, Any, Any]:
    """An agent registered under a two-hour ceiling, and the broker restarted over the
    same store with the ceiling lowered to one hour."""
    store, clock, ring = MemoryStore(), ManualClock(START), KeyRing.generate()
    before = make_broker(store=store, clock=clock, keyring=ring, renewal_ceiling=2 * HOUR)
    agent = kit.register(before, task_id="task-a")
    after = make_broker(store=store, clock=clock, keyring=ring, renewal_ceiling=HOUR)
    return after, clock, agent


def _refused_once(broker: Any, exc: pytest.ExceptionInfo[Any]) -> None:
    events, _ = broker.store.query_audit(AuditQuery(limit=10_000))
    assert len([e for e in events if f"denial={exc.value.denial_id}" in e.detail]) == 1


def test_a_resumption_is_held_to_the_configured_ceiling_as_a_renewal_is(
    make_broker: Any, kit: Any
) -> None:
    broker, clock, agent = _restarted(make_broker, kit)
    clock.advance(HOUR - 60)
    renewed = broker.renew(agent.claims, kit.ctx)
    assert renewed.claims.exp <= agent.claims.iat + HOUR  # the renewal keeps to it
    resumed = _resume(broker, kit, agent)
    assert resumed.claims.exp <= agent.claims.iat + HOUR
    assert resumed.claims.max_exp <= agent.claims.iat + HOUR
    clock.advance(60)
    with pytest.raises(RenewalCeilingExceeded) as refused:
        _resume(broker, kit, agent)
    _refused_once(broker, refused)


def test_a_revoked_task_is_not_resumed_once_its_entry_is_pruned(make_broker: Any, kit: Any) -> None:
    """The task's entry lives as long as the configured ceiling lets its agents resume
    (``Kernel.revocation_expiry``); past it, none of them may."""
    broker, clock, agent = _restarted(make_broker, kit)
    clock.advance(60)
    admin = kit.admin(broker).claims
    broker.revoke(admin, level="task", target="task-a", ctx=kit.ctx)
    clock.advance(HOUR + 120)
    broker.prune()
    with pytest.raises(RenewalCeilingExceeded) as refused:
        _resume(broker, kit, agent)
    _refused_once(broker, refused)
