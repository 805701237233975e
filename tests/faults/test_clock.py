"""A real broker whose wall clock is moved while it runs (libfaketime), over loopback HTTP.

libfaketime, preloaded into the broker, reads the clock's offset from a file on every
call (``FAKETIME_TIMESTAMP_FILE`` with ``FAKETIME_NO_CACHE=1``), so the test moves the
clock of the running process by rewriting that file. ``DONT_FAKE_MONOTONIC=1`` leaves the
monotonic clock alone, as a real step of the wall clock (NTP, a restored virtual machine)
does. ``make test`` installs libfaketime (scripts/ensure-faketime.sh); without it these
tests are skipped, except on CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import (
    Agent,
    RunningBroker,
    b64,
    jwt_parts,
    launch_broker,
    stop_broker,
)
from faults_support import FakeClock
from test_crash import _audit_verifies

pytestmark = pytest.mark.slow

# Every revocation entry of a default broker expires within max(max_ttl, renewal_ceiling)
# + skew + 1 = 3631 s of its making: a two-hour jump is past all of them.
JUMP = 7200
STEP_BACK = 3600
WAIT = 20.0


@pytest.fixture
def brokers() -> Iterator[Callable[[Path, dict[str, str]], RunningBroker]]:
    started: list[RunningBroker] = []

    def start(data: Path, env: dict[str, str]) -> RunningBroker:
        running = launch_broker(data, env)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            stop_broker(running)


def _metrics_text(broker: RunningBroker) -> str:
    """The broker's metrics: at the URL of its metrics listener when its start-up output
    names one, else at ``/v1/metrics``."""
    listener = re.search(r"^tasklease broker metrics on (http://\S+)$", broker.log(), re.M)
    if listener is None:
        return broker.get("/v1/metrics").text
    return httpx.get(listener[1], timeout=10).text


def _metric(broker: RunningBroker, name: str, labels: str = "") -> float:
    text = _metrics_text(broker)
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    match = re.search(rf"^{pattern}$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _pruned_behind(broker: RunningBroker, lag: float) -> None:
    """Until a prune has run with the horizon at least ``lag`` behind the wall clock
    (the gauge is set once the prune is done)."""
    _wait_for(
        lambda: _metric(broker, "tasklease_prune_horizon_lag_seconds") >= lag,
        f"a prune {lag} s behind the wall clock",
    )


def _jti(agent: Agent) -> str:
    return str(jwt_parts(agent.access_token)[1]["jti"])


def _resume(broker: RunningBroker, agent_id: str, key: Ed25519PrivateKey) -> str:
    nonce = broker.nonce()
    body = {"agent_id": agent_id, "nonce": nonce, "signature": b64(key.sign(bytes.fromhex(nonce)))}
    resp = broker.post("/v1/resume", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _renew(broker: RunningBroker, token: str) -> str:
    resp = broker.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def test_a_forward_jump_never_reopens_a_revoked_token(
    tmp_path: Path, fake_clock: FakeClock, brokers: Callable[..., RunningBroker]
) -> None:
    """Revoke, jump the clock two hours ahead, let pruning run (and restart the broker
    while the clock is still ahead), bring the clock back: the revoked token, unexpired
    again, stays refused."""
    data = tmp_path / "data"
    first = brokers(data, fake_clock.env())
    revoked = first.register(["read:data:*"])
    kept = first.register(["read:data:*"])
    assert first.revoke("token", _jti(revoked)).status_code == 200
    assert not first.is_valid(revoked.access_token)

    fake_clock.set(JUMP)
    _pruned_behind(first, JUMP - 60)
    assert _metric(first, "tasklease_clock_steps_total", 'direction="forward"') >= 1
    assert "stepped forward" in first.log()
    assert not first.is_valid(kept.access_token)  # expired by the jumped clock

    # A restart while the clock is still ahead continues from the stored horizon.
    stop_broker(first)
    second = brokers(data, fake_clock.env())
    _pruned_behind(second, JUMP - 60)

    fake_clock.set(0)
    exp = jwt_parts(revoked.access_token)[1]["exp"]
    assert exp > time.time() + 60, "the revoked token must be unexpired for the check"
    assert not second.is_valid(revoked.access_token)
    assert second.is_valid(kept.access_token)
    stop_broker(second)
    _audit_verifies(data)


def test_a_backward_step_keeps_the_chain_renewals_and_expiry(
    tmp_path: Path, fake_clock: FakeClock, brokers: Callable[..., RunningBroker]
) -> None:
    """Step the clock back an hour mid-run. Tokens are judged by their own iat and exp:
    one issued before the step is refused while its iat is beyond the clock's skew
    (it would otherwise live an hour past its lifetime), valid again once the clock is
    back, and dead at its exp. Renewal, resumption and revocation work after the step,
    revocations made before it hold, and the audit chain verifies."""
    data = tmp_path / "data"
    broker = brokers(data, fake_clock.env())
    before = broker.register(["read:data:*"])
    renewed = _renew(broker, before.access_token)
    revoked = broker.register(["read:data:*"])
    assert broker.revoke("token", _jti(revoked)).status_code == 200

    fake_clock.set(-STEP_BACK)
    _wait_for(
        lambda: _metric(broker, "tasklease_clock_steps_total", 'direction="backward"') >= 1,
        "the backward step noticed",
    )
    broker._admin_token = None  # the admin's token too is "from the future" now
    assert not broker.is_valid(renewed)  # issued "in the future" of the stepped clock
    assert not broker.is_valid(before.access_token)
    assert not broker.is_valid(revoked.access_token)

    # After the step: register, renew (the predecessor is refused), revoke, resume.
    after = broker.register(["read:data:*"])
    assert broker.is_valid(after.access_token)
    after_renewed = _renew(broker, after.access_token)
    assert broker.is_valid(after_renewed)
    assert not broker.is_valid(after.access_token)
    assert broker.revoke("token", str(jwt_parts(after_renewed)[1]["jti"])).status_code == 200
    assert not broker.is_valid(after_renewed)
    resumed = _resume(broker, before.agent_id, before.key)
    assert broker.is_valid(resumed)
    assert broker.is_valid(_renew(broker, resumed))

    # Tokens issued after the step die at their own exp by the stepped clock.
    lifetime = jwt_parts(resumed)[1]["exp"] - jwt_parts(resumed)[1]["iat"]
    fake_clock.set(-STEP_BACK + lifetime + 5)
    assert not broker.is_valid(resumed)

    # The clock is back: the token renewed before the step is valid until its exp; what
    # was revoked before the step, and the renewed predecessor, stay refused.
    fake_clock.set(0)
    assert broker.is_valid(renewed)
    assert not broker.is_valid(before.access_token)
    assert not broker.is_valid(revoked.access_token)
    exp = jwt_parts(renewed)[1]["exp"]
    fake_clock.set(int(exp - time.time()) + 2)
    assert not broker.is_valid(renewed)
    stop_broker(broker)
    _audit_verifies(data)
