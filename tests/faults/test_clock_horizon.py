"""Pruning against the safe horizon (core.horizon), with a manual wall clock and a manual
monotonic clock: a forward jump of the wall clock must not delete a revocation that a
token still valid by the true time needs, in memory, in the store, or across a restart.

Before the horizon, pruning ran against the wall clock: a jump past an entry's expiry
deleted it everywhere, and when the clock came back the revoked token validated again.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.horizon import STEP_THRESHOLD, SafeHorizon
from tasklease.core.keys import KeyRing
from tasklease.core.metrics import Metrics
from tasklease.core.store import Store
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, Claims, mint
from tasklease.core.validation import TokenRejected
from tasklease.storage import MemoryStore, open_store

CTX = RequestContext(request_id="req-clock", remote="127.0.0.1", path="/v1/test")
START = 1_800_000_000.0
CONFIG = Config(max_ttl=600, default_ttl=300, renewal_ceiling=900, clock_skew=30)
# Past every entry's expiry: revoked_at + max(max_ttl, renewal_ceiling, launch_token_max_ttl)
# + skew + 1.
JUMP = 3 * 3600.0


class Elapsed:
    """A monotonic clock that moves only when told to (steps of the wall clock leave it)."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


def _broker(store: Store, clock: ManualClock, elapsed: Elapsed, keyring: KeyRing) -> Broker:
    return Broker(CONFIG, store, keyring, clock=clock, nonce_secret=b"n" * 32, monotonic=elapsed)


def _admin(broker: Broker) -> Claims:
    _, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=CONFIG.issuer,
        sub="admin",
        aud=CONFIG.audience,
        iat=int(broker.clock.now()),
        ttl=CONFIG.admin_token_ttl,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    return claims


def _register(broker: Broker) -> tuple[str, Claims]:
    launch, _ = broker.create_launch_token(
        _admin(broker),
        agent_name="clock-agent",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=CTX,
    )
    key = SigningKey.generate()
    nonce, _ = broker.challenge()
    issued = broker.register(
        launch_token=launch,
        nonce=nonce,
        public_key=base64.b64encode(bytes(key.verify_key)).decode(),
        signature=base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
        orch_id="orch-clock",
        task_id="task-clock",
        requested_scope=["read:data:*"],
        ctx=CTX,
    )
    return issued.token, issued.claims


def _valid(broker: Broker, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return False
    return True


def _steps(broker: Broker, direction: str) -> float:
    value = broker.metrics.registry.get_sample_value(
        "tasklease_clock_steps_total", {"direction": direction}
    )
    return value or 0.0


def _lag(broker: Broker) -> float:
    value = broker.metrics.registry.get_sample_value("tasklease_prune_horizon_lag_seconds")
    assert value is not None
    return value


def test_a_forward_jump_does_not_reopen_a_revoked_token() -> None:
    clock, elapsed = ManualClock(START), Elapsed()
    broker = _broker(MemoryStore(), clock, elapsed, KeyRing.generate())
    token, claims = _register(broker)
    broker.revoke(_admin(broker), level="token", target=claims.jti, ctx=CTX)
    assert not _valid(broker, token)

    # The wall clock jumps three hours ahead while a minute passes, and pruning runs.
    clock.advance(JUMP + 60)
    elapsed.advance(60)
    broker.prune()
    assert len(broker.revocations) == 2  # the token-level entry and its chain twin
    assert len(broker.store.load_revocations(0)) == 2
    assert _steps(broker, "forward") == 1
    assert _lag(broker) == pytest.approx(JUMP)

    # The clock comes back: the token, unexpired again, is still revoked.
    clock.set(START + 120)
    elapsed.advance(60)
    assert claims.exp > clock.now()
    assert not _valid(broker, token)
    broker.prune()
    assert not _valid(broker, token)
    assert _steps(broker, "backward") == 1


def test_a_restart_during_the_jump_keeps_the_horizon(tmp_path: Path) -> None:
    """The horizon is persisted: a new process on the store does not prune by the jumped
    clock, loads every entry the true time still needs, and enforces it when the clock
    comes back (also a third process started after that)."""
    database = str(tmp_path / "tasklease.db")
    clock, keyring = ManualClock(START), KeyRing.generate()
    first = _broker(open_store(database), clock, Elapsed(), keyring)
    token, claims = _register(first)
    first.revoke(_admin(first), level="token", target=claims.jti, ctx=CTX)
    first.prune()  # a tick before the jump persists the horizon
    clock.advance(JUMP)
    first.audit.close()
    first.store.close()

    elapsed = Elapsed()
    second = _broker(open_store(database), clock, elapsed, keyring)
    elapsed.advance(60)
    second.prune()
    assert len(second.revocations) == 2
    assert _lag(second) == pytest.approx(JUMP, abs=61)
    clock.set(START + 60)
    assert not _valid(second, token)
    second.audit.close()
    second.store.close()

    third = _broker(open_store(database), clock, Elapsed(), keyring)
    assert not _valid(third, token)
    third.audit.close()
    third.store.close()


def test_a_backward_step_prunes_by_the_wall_clock() -> None:
    """Behind the horizon, the wall clock is what tokens are validated by: an entry made
    after the step is kept until its tokens are dead by that clock."""
    clock, elapsed = ManualClock(START), Elapsed()
    broker = _broker(MemoryStore(), clock, elapsed, KeyRing.generate())
    broker.prune()
    clock.advance(-3600)
    elapsed.advance(10)
    token, claims = _register(broker)
    broker.revoke(_admin(broker), level="token", target=claims.jti, ctx=CTX)
    broker.prune()
    assert _steps(broker, "backward") == 1
    assert len(broker.revocations) == 2
    assert not _valid(broker, token)


def test_entries_go_once_time_has_really_passed() -> None:
    clock, elapsed = ManualClock(START), Elapsed()
    broker = _broker(MemoryStore(), clock, elapsed, KeyRing.generate())
    _, claims = _register(broker)
    broker.revoke(_admin(broker), level="token", target=claims.jti, ctx=CTX)
    clock.advance(JUMP)
    elapsed.advance(JUMP)
    broker.prune()
    assert len(broker.revocations) == 0
    assert broker.store.load_revocations(0) == []
    assert _steps(broker, "forward") == _steps(broker, "backward") == 0
    assert _lag(broker) == 0


def test_the_horizon_adopts_a_greater_one_another_process_recorded() -> None:
    store, clock = MemoryStore(), ManualClock(START)
    mine, theirs = Elapsed(), Elapsed()
    horizon = SafeHorizon(clock, store, Metrics(), monotonic=mine)
    other = SafeHorizon(clock, store, Metrics(), monotonic=theirs)
    clock.advance(JUMP)
    theirs.advance(600)
    assert other.tick().point == START + 600
    mine.advance(10)
    tick = horizon.tick()
    assert tick.point == START + 600
    assert tick.lag == pytest.approx(JUMP - 600)
    assert store.safe_horizon() == START + 600


def test_after_a_stop_pruning_resumes_from_the_stored_horizon() -> None:
    """Nothing moves the horizon while the broker is stopped: a restart cannot tell a
    stop from a jump, so it takes the stop for one (entries are kept longer)."""
    store, clock = MemoryStore(), ManualClock(START)
    SafeHorizon(clock, store, Metrics(), monotonic=Elapsed()).tick()
    clock.advance(7200)  # stopped for two hours
    elapsed = Elapsed()
    restarted = SafeHorizon(clock, store, Metrics(), monotonic=elapsed)
    assert restarted.now() == START
    clock.advance(30)
    elapsed.advance(30)
    tick = restarted.tick()
    assert tick.point == START + 30
    assert tick.step == 0  # no step while running: the stop is not a step


def test_small_differences_are_not_steps() -> None:
    clock, elapsed = ManualClock(START), Elapsed()
    metrics = Metrics()
    horizon = SafeHorizon(clock, MemoryStore(), metrics, monotonic=elapsed)
    clock.advance(60 + STEP_THRESHOLD - 0.5)
    elapsed.advance(60)
    assert horizon.tick().step == pytest.approx(STEP_THRESHOLD - 0.5)
    assert metrics.registry.get_sample_value(
        "tasklease_clock_steps_total", {"direction": "forward"}
    ) in (None, 0.0)
