# Would fail if: an orchestrator's legitimate burst against `tasklease serve --workers 2`
# (hundreds of agents registering at once, delegating, renewing and releasing while some
# are revoked) met a 5xx or a surfaced "database is locked", a launch token admitted more
# agents than its uses, two agents shared a SPIFFE ID, a success or refusal lacked its one
# audit event, or a revoked agent's token stayed valid on either worker.
"""An orchestrator's burst, driven with the async SDK over real HTTP against two workers
on SQLite: registrations through one multi-use launch token and pairs contending for
single-use ones, a delegation from each agent, renewals interleaved with agent-level
revocations, then every release. Heavy (about 20 s on two cores): run by ``make soak``."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import ADMIN_SECRET, RunningBroker, launch_broker, stop_broker

from tasklease.client import AdminClient, AsyncAgent, TaskleaseError

pytestmark = [pytest.mark.soak, pytest.mark.slow]

AGENTS = 300
SINGLES = 30  # single-use launch tokens, each contended by two registrations
REVOKED = 40


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path / "data", {}, args=("--workers", "2"))
    yield running
    stop_broker(running)


def test_an_orchestrators_burst(two_workers: RunningBroker) -> None:
    broker = two_workers
    admin = AdminClient(broker.url, ADMIN_SECRET)
    refused: list[tuple[str, TaskleaseError]] = []
    done: Counter[str] = Counter()

    async def call(kind: str, work: Awaitable[Any]) -> Any:
        try:
            answer = await work
        except TaskleaseError as exc:
            refused.append((kind, exc))
            return None
        done[kind] += 1
        return answer

    async def burst() -> list[AsyncAgent]:
        shared = admin.create_launch_token(
            "orch", ["read:data:*"], single_use=False, max_uses=AGENTS - SINGLES, ttl=600
        )["launch_token"]
        singles = [
            admin.create_launch_token("orch", ["read:data:*"], ttl=600)["launch_token"]
            for _ in range(SINGLES)
        ]
        launches = [shared] * AGENTS + [t for t in singles for _ in range(2)]
        made = await asyncio.gather(
            *(
                call(
                    "register",
                    AsyncAgent.register(broker.url, lt, "orch", f"t{i}", ["read:data:x"]),
                )
                for i, lt in enumerate(launches)
            )
        )
        agents = [a for a in made if isinstance(a, AsyncAgent)]
        await asyncio.gather(
            *(
                call(
                    "delegate", a.delegate(agents[(i + 1) % len(agents)].agent_id, ["read:data:x"])
                )
                for i, a in enumerate(agents)
            )
        )

        async def revoke(agent: AsyncAgent) -> None:
            await asyncio.sleep(random.random() * 0.3)
            await asyncio.to_thread(admin.revoke, "agent", agent.agent_id)

        await asyncio.gather(
            *(call("renew", a.renew()) for a in agents), *(revoke(a) for a in agents[:REVOKED])
        )
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection each: both workers
        async with httpx.AsyncClient(base_url=broker.url, limits=fresh) as client:
            for agent in agents[:REVOKED]:
                for _ in range(4):
                    answer = await client.post("/v1/token/validate", json={"token": agent.token})
                    assert answer.json()["valid"] is False
        await asyncio.gather(*(call("release", a.release()) for a in agents))
        await asyncio.gather(*(a.aclose() for a in agents))
        return agents

    try:
        agents = asyncio.run(burst())
    finally:
        admin.close()
    # Every refusal first: a missing agent is then explained by what refused it (a 5xx, or
    # no answer at all: status None).
    statuses = Counter((kind, exc.status, exc.code) for kind, exc in refused)
    assert all(status is not None and status < 500 for _, status, _ in statuses), statuses
    assert len(agents) == AGENTS, statuses  # the multi-use token's uses and one per single
    assert len({a.agent_id for a in agents}) == AGENTS
    # The shared token's uses past its max, and one of each contended pair.
    assert statuses[("register", 401, "unauthorized")] == 2 * SINGLES, statuses
    assert not any("locked" in (exc.detail or "") for _, exc in refused)
    with AdminClient(broker.url, ADMIN_SECRET) as auditor:
        events = list(auditor.iter_audit_events())
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["agent_registered"] == AGENTS
    assert kinds["delegation_created"] == done["delegate"]
    assert kinds["token_renewed"] == done["renew"]
    named = Counter(
        m[1] for e in events if (m := re.search(r"denial=(den_[0-9a-f]+)$", e["detail"] or ""))
    )
    for _, exc in refused:
        assert exc.denial_id and named[exc.denial_id] == 1, exc
    assert "database is locked" not in broker.log()
    assert "Traceback" not in broker.log()
