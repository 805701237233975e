"""An agent that heartbeats (or says it is done) after the sweeper read it as silent, and
before its revocation is written, is not swept: the sweep re-reads the session in its
transaction.

The store's list of silent agents is taken, then the agent heartbeats (the store below
lets it in right after that read, which is the window a real sweep leaves open).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.records import AgentSession
from tasklease.core.store import AuditQuery
from tasklease.storage import MemoryStore

from .conftest import NONCE_SECRET, START


class _HeartbeatAfterRead(MemoryStore):
    """Runs ``meanwhile`` once, right after the sweeper's read of the silent agents."""

    meanwhile: Callable[[], None] | None = None

    def silent_agents(self, before: float, limit: int) -> list[AgentSession]:
        silent = super().silent_agents(before, limit)
        hook, self.meanwhile = self.meanwhile, None
        if hook is not None:
            hook()
        return silent


def _heartbeat(broker: Broker, kit: Any, agent: Any, done: bool) -> None:
    now = int(broker.clock.now())
    proof = secrets.token_hex(8)
    message = heartbeat_signing_input(agent.sub, agent.claims.jti, now, proof, done)
    broker.heartbeat(
        agent.claims,
        timestamp=now,
        jti=proof,
        signature=base64.b64encode(agent.key.sign(message).signature).decode("ascii"),
        done=done,
        ctx=kit.ctx,
    )


@pytest.mark.parametrize("done", [False, True], ids=["heartbeat", "done"])
def test_an_agent_that_answers_during_the_sweep_is_not_swept(
    kit: Any, admin_secret_hash: str, done: bool
) -> None:
    clock = ManualClock(START)
    store = _HeartbeatAfterRead()
    config = Config(admin_secret_hash=admin_secret_hash, heartbeat_required=True)
    broker = Broker(
        config, store, KeyRing.generate(), clock=clock, nonce_secret=NONCE_SECRET,
        monotonic=clock.now,
    )  # fmt: skip
    agent = kit.register(broker, task_id="task-late")
    clock.advance(config.heartbeat_interval * config.heartbeat_misses + 1)
    store.meanwhile = lambda: _heartbeat(broker, kit, agent, done)
    assert broker.sweep_silent_agents() == []
    assert store.meanwhile is None  # the heartbeat did land between read and revocation
    session = store.get_agent_session(agent.sub)
    assert session is not None and session.state == ("released" if done else "active")
    assert store.query_audit(AuditQuery(event_type="agent_silent_revoked"))[0] == []
    if not done:
        assert broker.authenticate(kit.bearer(agent.token), kit.ctx).sub == agent.sub
