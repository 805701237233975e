"""A verifier prunes its revocations against the time that elapsed, not the wall clock:
the host's clock stepped two days ahead (a wrong NTP answer, a restored virtual machine)
and back forgets nothing, so a revoked token stays refused (a real broker process)."""

from __future__ import annotations

import time

import pytest
from e2e_support import RunningBroker
from verify_support import app_credentials, poll

from tasklease.verify import InvalidToken, Verifier


class _Clock:
    """The wall clock, stepped by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def test_a_forward_clock_step_forgets_no_revocation(broker: RunningBroker) -> None:
    clock = _Clock()
    verifier = Verifier(
        broker.url, audience="svc-a", credentials=app_credentials(broker), clock=clock
    )
    with verifier:
        agent = broker.register(["read:data:*"])
        assert verifier.verify(agent.access_token).sub == agent.agent_id
        assert broker.revoke("agent", agent.agent_id).status_code == 200
        poll(lambda: verifier.stats()["revocation_entries"] >= 1, timeout=10)
        held = verifier.stats()["revocation_entries"]
        clock.offset = 2 * 24 * 3600
        time.sleep(4.5)  # two keepalives of the feed: housekeeping prunes on each
        # Nothing pruned (other tests sharing the broker may add entries meanwhile).
        assert verifier.stats()["revocation_entries"] >= held
        clock.offset = 0.0
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(agent.access_token)
        assert "revoked" in refused.value.reason
