"""An agent- or task-level revocation is kept as long as the agents it names could resume,
not only as long as a token lives: when the registration's lifetime ceiling is longer than
``max_ttl``, pruning the entry after ``max_ttl`` would let a revoked agent resume. And
from that ceiling on, the agent itself is in no good standing."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize("level", ["agent", "task"])
def test_the_entry_outlives_the_registrations_lifetime_ceiling(
    make_broker: Any, kit: Any, level: str
) -> None:
    broker = make_broker(max_ttl=600, renewal_ceiling=3_600)
    agent = kit.register(broker, kit.launch(broker))
    target = agent.sub if level == "agent" else agent.claims.task_id
    broker.revoke(kit.admin(broker).claims, level=level, target=target, ctx=kit.ctx)
    ceiling = agent.claims.oiat + broker.config.renewal_ceiling
    # Past every token's lifetime, yet the agent could still resume: the entry stays.
    kept = broker.store.load_revocations(float(ceiling))
    assert [r for r in kept if (r.level, r.target) == (level, target)]


def test_an_agent_is_out_of_standing_from_its_lifetime_ceiling_on(broker: Any, kit: Any) -> None:
    # No token of the registration may live to its ceiling (exp <= max_exp), so at that
    # second the agent can neither resume nor receive a delegation.
    agent = kit.register(broker, kit.launch(broker))
    ceiling = agent.claims.max_exp
    broker.clock.advance(ceiling - 1 - broker.clock.now())
    assert broker.kernel.agent_standing(agent.sub) == (broker.store.get_agent(agent.sub), "")
    broker.clock.advance(1)
    _, why = broker.kernel.agent_standing(agent.sub)
    assert why == "agent registration past its lifetime ceiling"
