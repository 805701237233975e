"""A verifier prunes its revocations and its DPoP replay ledger against the time that
elapsed, not the wall clock: the host's clock stepped ahead (a wrong NTP answer, a restored
virtual machine) and back forgets nothing, so a revoked token stays refused and a proof
seen before cannot be replayed (a real broker process)."""

from __future__ import annotations

import time

import nacl.signing
import pytest
from e2e_support import RunningBroker
from verify_support import app_credentials, dpop_proof, poll

from tasklease.rules.binding import PROOF_REPLAYED
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


def test_a_dpop_proof_seen_before_a_forward_step_is_refused_after_the_step_back(
    broker: RunningBroker,
) -> None:
    # A proof is remembered until its window is over by the time that elapsed as well as
    # by the clock: a step forward two minutes (within the token's life, past the proof
    # window) and back forgets no proof, so a captured one cannot be presented again.
    clock = _Clock()
    verifier = Verifier(
        broker.url, audience="svc-a", credentials=app_credentials(broker), clock=clock
    )
    agent = broker.register(["read:data:*"], dpop=True)
    key = nacl.signing.SigningKey(agent.key.private_bytes_raw())
    token, url = agent.access_token, "https://rs.example/data/1"
    with verifier:
        captured = dpop_proof(key, htm="GET", htu=url, token=token)
        presented = {"scheme": "DPoP", "htm": "GET", "htu": url}
        assert verifier.verify(token, dpop_proof=captured, **presented).sub == agent.agent_id
        clock.offset = 120.0
        later = dpop_proof(key, htm="GET", htu=url, token=token, iat=time.time() + 120)
        assert verifier.verify(token, dpop_proof=later, **presented).sub == agent.agent_id
        clock.offset = 0.0
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(token, dpop_proof=captured, **presented)
        assert refused.value.reason == PROOF_REPLAYED
