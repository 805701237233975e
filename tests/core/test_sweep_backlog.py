"""One sweep revokes every agent that is due, however many were due before it.

The sweeper read the silent agents a hundred at a time, oldest silence first, and swept one
batch per round (one round per ``heartbeat_interval``). Agents that stop without saying
``done`` (crashed, or registered in bulk through a multi-use launch token and abandoned)
queued ahead of a later one: an agent silent past its deadline kept its tokens, and every
token delegated from it, for as many rounds as there were batches ahead of it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import SWEEP_BATCH
from tasklease.storage import MemoryStore

from .conftest import NONCE_SECRET, START


def test_an_agent_silent_past_its_deadline_is_swept_in_the_next_round(
    kit: Any, admin_secret_hash: str
) -> None:
    clock = ManualClock(START)
    config = Config(
        admin_secret_hash=admin_secret_hash,
        heartbeat_required=True,
        heartbeat_interval=30,
        heartbeat_misses=3,
    )
    broker = Broker(
        config,
        MemoryStore(),
        KeyRing.generate(),
        clock=clock,
        nonce_secret=NONCE_SECRET,
        monotonic=clock.now,  # elapsed time follows the manual clock
    )
    abandoned = [kit.register(broker, task_id=f"bulk-{i}") for i in range(SWEEP_BATCH)]
    clock.advance(1)
    victim = kit.register(broker, task_id="task-victim")
    clock.advance(3 * 30 + 1)  # every one of them is past its deadline
    swept = broker.sweep_silent_agents()
    assert victim.sub in swept
    assert len(swept) == len(abandoned) + 1
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(victim.token), kit.ctx)
