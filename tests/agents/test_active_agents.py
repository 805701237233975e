"""``tasklease_active_agents``: the deployment's live agents, read from the store at each
housekeeping tick (``Broker.prune``), on real SQLite and PostgreSQL stores as on memory.

The gauge used to be a counter in disguise: raised by each registration this process
made, never lowered by a revocation, a release, an app's removal or the ceiling, reset
by a restart. It now counts what ``core.activeagents`` says is live, for every replica
alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents_support import CTX, START, AgentHandle, Env, _Served, b64

from tasklease.core import brokerbase
from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.store import Store
from tasklease.http.app import create_app
from tasklease.rules import jws as _jws
from tasklease.storage import MemoryStore, SQLiteStore


def _postgres(_: Path) -> Store:
    import pgcluster

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    return PostgresStore(cluster.new_database("active"))


_STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda _: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(tmp / "tasklease.db"),
    "postgres": _postgres,
}


class _Running:
    """Brokers on one store (replicas of one deployment), each served over HTTP."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = ManualClock(START)
        self.served: list[_Served] = []
        self.envs: list[Env] = []

    def broker(self) -> Env:
        broker = Broker(
            Config(heartbeat_interval=30, heartbeat_misses=3),
            self.store,
            KeyRing.generate(),
            clock=self.clock,
            nonce_secret=b"n" * 32,
        )
        served = _Served(create_app(broker, background=False))
        env = Env(broker, self.clock, served.url)
        self.served.append(served)
        self.envs.append(env)
        return env

    def close(self) -> None:
        for env in self.envs:
            env.http.close()
        for served in self.served:
            served.stop()
        self.store.close()


@pytest.fixture(params=list(_STORES))
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Running]:
    deployment = _Running(_STORES[request.param](tmp_path))
    yield deployment
    deployment.close()


def _gauge(env: Env) -> float:
    """What a scrape of ``env``'s broker reads of the gauge, after a housekeeping tick."""
    env.broker.prune()
    text = env.broker.metrics.render().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("tasklease_active_agents ")]
    return float(line.split()[1])


def _release(env: Env, agent: AgentHandle) -> None:
    """``agent`` says it is done (a signed heartbeat): released at agent level."""
    now = int(env.clock.now())
    nonce = env.nonce_hex()
    jti = _jws.decode_unverified(agent.token)[1]["jti"]
    message = heartbeat_signing_input(agent.agent_id, jti, now, nonce, True)
    answer = env.http.post(
        "/v1/heartbeat",
        headers=agent.auth(),
        json={
            "timestamp": now,
            "jti": nonce,
            "signature": b64(agent.key.sign(message).signature),
            "done": True,
        },
    )
    assert answer.status_code == 200, answer.text


def _revoke(env: Env, level: str, target: str) -> None:
    answer = env.http.post(
        "/v1/revoke",
        json={"level": level, "target": target},
        headers={"Authorization": f"Bearer {env.admin_token()}"},
    )
    assert answer.status_code == 200, answer.text


def test_released_and_revoked_agents_leave_the_gauge(running: _Running) -> None:
    env = running.broker()
    agents = [env.register(f"task-{i}") for i in range(3)]
    assert _gauge(env) == 3
    _release(env, agents[0])
    _revoke(env, "agent", agents[1].agent_id)
    assert _gauge(env) == 1
    # Past the renewal ceiling the last one is no longer live either.
    running.clock.advance(env.broker.config.renewal_ceiling)
    assert _gauge(env) == 0


def test_every_replica_reads_the_deployments_figure_and_a_restart_keeps_it(
    running: _Running,
) -> None:
    first, second = running.broker(), running.broker()
    first.register("task-a")
    second.register("task-b")
    second.register("task-c")
    # Each replica registered some; each reads them all.
    assert _gauge(first) == _gauge(second) == 3
    _revoke(first, "agent", second.register("task-d").agent_id)
    assert _gauge(first) == _gauge(second) == 3
    # A broker started again on the same store reads the same, not 0.
    assert _gauge(running.broker()) == 3


def test_a_task_revocation_and_an_app_removed_end_their_agents(running: _Running) -> None:
    env = running.broker()
    kept = env.register("task-kept")
    env.register("task-ended")
    env.register("task-ended")
    _revoke(env, "task", "task-ended")
    assert _gauge(env) == 1
    # A task id used again after its revocation (once past the entry's date, which
    # is clock_skew ahead): the new registration is live, the old ones are not.
    running.clock.advance(env.broker.config.clock_skew + 1)
    env.register("task-ended")
    assert _gauge(env) == 2
    _revoke(env, "agent", kept.agent_id)
    assert _gauge(env) == 1

    claims = env.admin_claims()
    app, secret = env.broker.register_app(
        claims, name="ci", scopes=["read:data:*"], token_ttl=None, ctx=CTX
    )
    app_claims = env.broker.app_auth(app.client_id, secret, CTX).claims
    for task in ("task-app-1", "task-app-2"):
        _register_for(env, env.broker.create_launch_token(app_claims, **_launch())[0], task)
    assert _gauge(env) == 3
    env.broker.deregister_app(claims, app.app_id, CTX)
    assert _gauge(env) == 1


def _launch() -> dict[str, Any]:
    return {
        "agent_name": "agent",
        "allowed_scope": ["read:data:*"],
        "max_ttl": None,
        "single_use": None,
        "ttl": None,
        "ctx": CTX,
    }


def _register_for(env: Env, launch_token: str, task: str) -> None:
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    nonce = env.http.get("/v1/challenge").json()["nonce"]
    answer = env.http.post(
        "/v1/register",
        json={
            "launch_token": launch_token,
            "nonce": nonce,
            "public_key": b64(bytes(key.verify_key)),
            "signature": b64(key.sign(bytes.fromhex(nonce)).signature),
            "orch_id": "orch-1",
            "task_id": task,
            "requested_scope": ["read:data:*"],
        },
    )
    assert answer.status_code == 200, answer.text


class _Monotonic:
    """``time`` for ``core.brokerbase`` with a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_slow_count_and_one_cut_by_the_statement_timeout_are_not_made_at_every_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A count that took 4 s is made again after 80 s, not at the next minute's tick; one
    the database cut after its 5 s timeout alike (it used to be tried again at every tick,
    a connection busy 5 s each time), the gauge keeping the last count."""
    deployment = _Running(MemoryStore())
    try:
        env = deployment.broker()
        env.register("task-a")
        mono = _Monotonic()
        monkeypatch.setattr(brokerbase, "time", mono)
        calls: list[str] = []
        real = env.broker.store.live_agents

        def slow(now: float, registered_from: float) -> int:
            calls.append("slow")
            mono.now += 4.0
            return real(now, registered_from)

        def cut(now: float, registered_from: float) -> int:
            calls.append("cut")
            mono.now += 5.0
            raise Unavailable("canceling statement due to statement timeout")

        monkeypatch.setattr(env.broker.store, "live_agents", slow)
        assert env.broker.refresh_active_agents() == 1
        mono.now += 60
        assert env.broker.refresh_active_agents() is None
        mono.now += 20
        monkeypatch.setattr(env.broker.store, "live_agents", cut)
        with pytest.raises(Unavailable):
            env.broker.refresh_active_agents()
        for _ in range(3):
            mono.now += 30
            assert env.broker.refresh_active_agents() is None
        assert calls == ["slow", "cut"]
        text = env.broker.metrics.render().decode()
        assert "tasklease_active_agents 1.0" in text
        mono.now += 20 * 5.0
        monkeypatch.setattr(env.broker.store, "live_agents", real)
        assert env.broker.refresh_active_agents() == 1
    finally:
        deployment.close()
