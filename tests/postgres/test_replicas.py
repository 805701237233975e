"""Two real broker replicas (two processes, two ports) on one PostgreSQL database.

The tests that neither stop a replica nor need a database of their own share one pair
(``replica_pair``); what they count, they count from where they started."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pgcluster
import pytest
from e2e_support import RunningBroker, assert_problem, metrics_url
from pg_e2e import start_replica, verify_chain

from tasklease.core.launch import launch_token_hash
from tasklease.core.store import AuditQuery
from tasklease.storage.postgres import PostgresStore

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]
Pair = tuple[RunningBroker, RunningBroker]  # shared by the tests of this module
PROPAGATION_BOUND = 2.0  # seconds; the notification normally lands in milliseconds


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.005) -> float:
    """Poll ``condition`` until true; return the seconds it took (fail after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - started


def metric(replica: RunningBroker, name: str) -> float:
    text = httpx.get(metrics_url(replica), timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


def test_register_on_a_validate_on_b_revoke_on_b_enforced_on_a(replica_pair: Pair) -> None:
    a, b = replica_pair
    propagated = metric(a, "tasklease_revocation_propagation_seconds_count")
    agent = a.register(["read:data:*"])
    assert b.is_valid(agent.access_token)
    assert a.is_valid(agent.access_token)

    resp = b.revoke("agent", agent.agent_id)
    assert resp.status_code == 200, resp.text
    assert not b.is_valid(agent.access_token)  # the revoking replica: at once
    took = wait_until(lambda: not a.is_valid(agent.access_token), PROPAGATION_BOUND)
    assert took < PROPAGATION_BOUND
    # A observed the propagation from B's commit (the metric is the other replica's view).
    assert metric(a, "tasklease_revocation_propagation_seconds_count") >= propagated + 1
    for replica in (a, b):
        health = replica.get("/v1/health").json()
        assert health["status"] == "ok", health
        assert health["revocations_current"] is True


def test_one_single_use_launch_token_twenty_registrations_one_winner(replica_pair: Pair) -> None:
    a, b = replica_pair
    launch = a.launch_token(["read:data:*"])
    bodies = [(a if i % 2 else b).register_body(launch, ["read:data:*"])[0] for i in range(20)]
    barrier = threading.Barrier(20)

    def register(i: int) -> int:
        target = a if i % 2 == 0 else b
        with httpx.Client(base_url=target.url, timeout=30) as client:
            barrier.wait()
            return client.post("/v1/register", json=bodies[i]).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(register, range(20)))
    assert statuses.count(200) == 1, statuses
    assert set(statuses) == {200, 401}, statuses


def _registered(url: str) -> int:
    """How many ``agent_registered`` events the audit log on ``url`` holds."""
    with PostgresStore(url, migrate=False) as store:
        return store.query_audit(AuditQuery(event_type="agent_registered"))[1]


def test_five_uses_twenty_registrations_on_two_replicas_five_winners(
    replica_pair: Pair, pair_url: str
) -> None:
    a, b = replica_pair
    pg_url = pair_url
    registered_before = _registered(pg_url)
    launch = a.launch_token(["read:data:*"], single_use=False, max_uses=5, ttl=120)
    bodies = [a.register_body(launch, ["read:data:*"])[0] for _ in range(20)]
    barrier = threading.Barrier(20)

    def register(i: int) -> int:
        target = a if i % 2 == 0 else b
        with httpx.Client(base_url=target.url, timeout=30) as client:
            client.get("/v1/health")
            barrier.wait(timeout=30)
            return client.post("/v1/register", json=bodies[i]).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = sorted(pool.map(register, range(20)))
    assert statuses == [200] * 5 + [401] * 15, statuses
    registered = _registered(pg_url) - registered_before
    with PostgresStore(pg_url, migrate=False) as store:
        record = store.get_launch_token(launch_token_hash(launch))
    assert registered == 5
    assert record is not None
    assert (record.uses, record.uses_left) == (5, 0)


def test_interleaved_operations_on_both_replicas_keep_one_chain(
    replica_pair: Pair, pair_url: str, tmp_path: Path
) -> None:
    a, b = replica_pair

    def work(replica: RunningBroker) -> None:
        replica.create_app(["read:data:*"])  # argon2: once, not per round
        for _ in range(6):
            agent = replica.register(["read:data:*"])
            assert replica.revoke("token", f"jti-{agent.agent_id[-8:]}").status_code == 200
            replica.validate(agent.access_token)

    threads = [threading.Thread(target=work, args=(r,)) for r in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    done = verify_chain(pair_url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit chain intact" in done.stdout
    count = int(re.search(r"intact: (\d+) events", done.stdout)[1])  # type: ignore[index]
    assert count >= 4 * 6 * 4  # launch token, registered, issued, revoked per round


def test_sigkill_during_registrations_loses_no_acknowledged_one(
    pg_url: str, replicas: Replicas, tmp_path: Path
) -> None:
    victim, other = replicas(pg_url)
    launch = other.launch_token(["read:data:*"], single_use=False, max_uses=10_000, ttl=600)
    acknowledged: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=victim.url, timeout=10) as client:
            while not stop.is_set():
                body, _ = other.register_body(launch, ["read:data:*"])
                try:
                    resp = client.post("/v1/register", json=body)
                except httpx.TransportError:
                    return
                if resp.status_code == 200:
                    acknowledged.append(resp.json()["agent_id"])

    workers = [threading.Thread(target=stream) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(acknowledged) >= 30, 30, step=0.01)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    stop.set()
    for worker in workers:
        worker.join(timeout=30)
    victim.client.close()

    restarted = start_replica(pg_url, victim.data_dir)
    replicas.track(restarted)  # type: ignore[attr-defined]
    assert restarted.register(["read:data:*"]).agent_id  # the restarted replica works

    with PostgresStore(pg_url, migrate=False) as store:
        registered = {
            event.agent_id
            for event in store.query_audit(
                AuditQuery(event_type="agent_registered", limit=100_000)
            )[0]
        }
    missing = [agent_id for agent_id in acknowledged if agent_id not in registered]
    assert missing == [], f"{len(missing)} acknowledged registrations not in the audit log"
    done = verify_chain(pg_url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_database_outage_fails_closed_and_recovers(replicas: Replicas, tmp_path: Path) -> None:
    # A cluster of its own: this test stops PostgreSQL under the replica.
    try:
        cluster = pgcluster.Cluster.create()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    try:
        url = cluster.new_database("outage")
        (replica,) = replicas(url, n=1, env={"TASKLEASE_REVOCATION_STALENESS_BOUND": "2"})
        agent = replica.register(["read:data:*"])
        admin = replica.admin_headers()
        launch = replica.launch_token(["read:data:*"], ttl=600)
        body, _ = replica.register_body(launch, ["read:data:*"])
        assert replica.is_valid(agent.access_token)

        cluster.stop("fast")
        # Writes fail at once: nothing succeeds that was not recorded.
        resp = replica.post("/v1/admin/auth", json={"secret": replica.admin_secret})
        assert_problem(resp, 503, "service_unavailable")
        assert_problem(replica.post("/v1/register", json=body), 503, "service_unavailable")
        # Past the staleness bound even validation, which needs no database, fails closed.
        wait_until(
            lambda: replica.post("/v1/token/validate", json={"token": agent.access_token})
            .status_code == 503,
            10,
            step=0.1,
        )  # fmt: skip
        assert_problem(
            replica.post("/v1/token/validate", json={"token": agent.access_token}),
            503,
            "service_unavailable",
        )
        assert_problem(replica.get("/v1/admin/apps", headers=admin), 503, "service_unavailable")
        # /v1/health answers from its last check (made every second, never waited for).
        wait_until(lambda: replica.get("/v1/health").json()["revocations_current"] is False, 5, 0.1)
        health = replica.get("/v1/health").json()
        assert health["status"] == "degraded"
        assert "revocation" in health["reason"]
        assert replica.get("/v1/health/ready").status_code == 503

        cluster.start()
        wait_until(lambda: replica.get("/v1/admin/apps", headers=admin).status_code == 200, 30, 0.2)
        assert replica.is_valid(agent.access_token)
        # The registration refused during the outage consumed nothing.
        assert replica.register(["read:data:*"], launch_token=launch).agent_id
        wait_until(lambda: replica.get("/v1/health").json()["status"] == "ok", 5, 0.1)
        wait_until(lambda: replica.get("/v1/health/ready").status_code == 200, 5, 0.1)
        done = verify_chain(url, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        cluster.destroy()


def test_a_tenant_made_on_a_serves_on_b_and_its_revocations_cross(replica_pair: Pair) -> None:
    # Would fail if: a tenant created through one replica were unknown to another, a
    # replica made signing keys of its own for it, or a tenant's revocation did not reach
    # the other replica (tenant brokers follow the shared LISTEN connection) or reached
    # another tenant.
    a, b = replica_pair
    acme_a = a.create_tenant("acme")
    agent = acme_a.register(["read:data:*"])
    acme_b = b.tenant("acme", acme_a.admin_secret)
    assert acme_b.is_valid(agent.access_token)
    kids = {v.get("/.well-known/jwks.json").json()["keys"][0]["kid"] for v in (acme_a, acme_b)}
    assert len(kids) == 1  # one key, shared by the replicas
    other = a.create_tenant("globex")
    bystander = other.register(["read:data:*"])
    resp = acme_b.revoke("task", agent.task_id)
    assert resp.status_code == 200, resp.text
    wait_until(lambda: not acme_a.is_valid(agent.access_token), PROPAGATION_BOUND)
    assert other.is_valid(bystander.access_token)
    assert not a.is_valid(agent.access_token)  # nor is it valid in the default tenant
