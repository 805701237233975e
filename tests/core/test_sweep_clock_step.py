# Would fail if: the silent-agent sweeper measured silence by a wall clock that jumped
# ahead (a bad NTP answer, a virtual machine resumed elsewhere) - it revoked every
# supervised agent as silent, and wrote a sweeper lease that no replica with a right
# clock could take over until the jumped clock's future, so nobody swept real silence;
# or if a tenant's broker took the process's wall clock for its elapsed time.
"""The sweeper keeps to elapsed time, whatever the wall clock says.

Two brokers on one SQLite file stand for two replicas. ``steady``'s wall clock is right;
``jumped``'s steps an hour ahead after it started. Both measure elapsed time by
``elapsed`` (their monotonic clocks), which steps of the wall clock do not move.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.store import AuditQuery
from tasklease.storage import MemoryStore, open_store
from tasklease.tenancy import Tenancy

START = 1_800_000_000.0
JUMP = 3600.0


def _heartbeat(broker: Broker, kit: Any, agent: Any) -> None:
    now = int(broker.clock.now())
    proof = secrets.token_hex(8)
    message = heartbeat_signing_input(agent.sub, agent.claims.jti, now, proof, False)
    broker.heartbeat(
        agent.claims,
        timestamp=now,
        jti=proof,
        signature=base64.b64encode(agent.key.sign(message).signature).decode("ascii"),
        done=False,
        ctx=kit.ctx,
    )


def test_a_replica_whose_clock_jumps_ahead_sweeps_no_live_agent_and_holds_no_lease(
    tmp_path: Path, kit: Any, admin_secret_hash: str
) -> None:
    config = Config(admin_secret_hash=admin_secret_hash, heartbeat_required=True)
    url, ring = f"sqlite://{tmp_path / 'shared.db'}", KeyRing.generate()
    elapsed = ManualClock(1000.0)
    walls = (ManualClock(START), ManualClock(START))
    steady, jumped = (
        Broker(
            config, open_store(url), ring, clock=w, nonce_secret=b"n" * 32, monotonic=elapsed.now
        )
        for w in walls
    )

    def advance(seconds: float) -> None:
        elapsed.advance(seconds)
        for wall in walls:
            wall.advance(seconds)

    live = kit.register(steady, task_id="task-live")
    quiet = kit.register(steady, task_id="task-quiet")
    advance(60)  # both well within 3 misses x 30 s
    walls[1].advance(JUMP)
    assert jumped.sweep_silent_agents() == []
    assert not jumped.store.find_revocations([("agent", live.sub), ("agent", quiet.sub)])
    swept = AuditQuery(event_type="agent_silent_revoked")
    assert steady.store.query_audit(swept)[0] == []
    # Real silence is still swept, within a lease's length, by the replica whose clock
    # is right: the jumped one took the lease only until two intervals of elapsed time.
    _heartbeat(steady, kit, live)
    advance(100)
    _heartbeat(steady, kit, live)
    assert steady.sweep_silent_agents() == [quiet.sub]
    assert [e.agent_id for e in steady.store.query_audit(swept)[0]] == [quiet.sub]


def test_a_tenants_sweeper_keeps_to_elapsed_time_too(kit: Any, admin_secret_hash: str) -> None:
    """A tenant's broker reads elapsed time where the default tenant's does: built with
    the process's clock, it took that clock for elapsed time, and a jump swept everyone."""
    config = Config(admin_secret_hash=admin_secret_hash, heartbeat_required=True)
    elapsed, wall = ManualClock(1000.0), ManualClock(START)
    default = Broker(
        config, MemoryStore(), KeyRing.generate(), clock=wall, nonce_secret=b"n" * 32,
        monotonic=elapsed.now,
    )  # fmt: skip
    tenancy = Tenancy(default, monotonic=elapsed.now)
    tenancy.create(kit.admin(default).claims, name="acme", trust_domain="acme.example", ctx=kit.ctx)
    acme = tenancy.broker("acme")
    assert acme is not None
    live = kit.register(acme, task_id="task-live")
    elapsed.advance(60)
    wall.advance(60 + JUMP)
    assert acme.sweep_silent_agents() == []
    assert not acme.store.find_revocations([("agent", live.sub)])
    # Pruning keeps to the same elapsed time (docs/decisions.md 58), as the default's does.
    assert acme.horizon.now() == default.horizon.now() == START + 60
    tenancy.close()


def test_the_checkpoint_and_feed_leases_keep_to_elapsed_time(
    tmp_path: Path, admin_secret_hash: str
) -> None:
    """A replica whose clock jumped ahead held the audit checkpoint's lease and the
    federation feeds' until its clock's future: no replica with a right clock made a
    checkpoint, nor followed a peer's revocations, until then, even once it was gone."""
    config = Config(admin_secret_hash=admin_secret_hash)
    url, ring = f"sqlite://{tmp_path / 'shared.db'}", KeyRing.generate()
    elapsed = ManualClock(1000.0)
    walls = (ManualClock(START), ManualClock(START))
    steady, jumped = (
        Broker(
            config, open_store(url), ring, clock=w, nonce_secret=b"n" * 32, monotonic=elapsed.now
        )
        for w in walls
    )
    walls[1].advance(JUMP)
    assert jumped.hold_feed_lease(30.0)
    assert jumped.transparency.sign_if_due(force=True) is not None
    # The jumped replica stops (killed: it gives nothing up); a lease's length of elapsed
    # time later, the replica whose clock is right takes both over.
    for clock in (elapsed, *walls):
        clock.advance(120.0)
    assert steady.hold_feed_lease(30.0)
    assert steady.transparency.sign_if_due(force=True) is not None
