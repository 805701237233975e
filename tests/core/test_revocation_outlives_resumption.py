"""An agent- or task-level revocation is kept as long as the agents it names could resume,
not only as long as a token lives: when the registration's lifetime ceiling is longer than
``max_ttl``, pruning the entry after ``max_ttl`` would let a revoked agent resume."""

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
