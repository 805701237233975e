"""PostgreSQL freezes under a running broker: writes fail within a bound, then recover.

Seen under faults: with the server stopped by SIGSTOP (it accepts bytes and answers
nothing; a hung host, a paused VM) every write hung for as long as the freeze lasted, as
did ``/v1/health``: only a connect timeout was set, and a frozen server enforces no
timeout of its own. Now every call has a client-side deadline (the statement timeout and
half a second), storage 503s carry ``Retry-After``, calls fail at once for a second after
the database stopped answering, and the broker recovers by itself after SIGCONT.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pgcluster
import pytest
from e2e_support import RunningBroker, stop_broker
from faults_support import freeze, thaw
from pg_e2e import migrate, start_replica, verify_chain, warm

from tasklease.core.errors import Unavailable
from tasklease.core.readahead import InThread
from tasklease.storage._pg_guard import Limits
from tasklease.storage.postgres import PostgresStore

pytestmark = pytest.mark.slow

STATEMENT_TIMEOUT = 5.0  # the default (database_statement_timeout)
# The deadline is the statement timeout and 0.5 s; allow for a loaded 2-core machine.
WRITE_BOUND = STATEMENT_TIMEOUT + 0.5 + 2.0
FAST = 1.5  # seconds a write takes once the broker knows the database is not answering


def _timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    answer = call()
    return time.monotonic() - started, answer


def _wait_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_writes_fail_within_the_bound_while_postgres_is_frozen_then_recover(
    module_cluster: pgcluster.Cluster, tmp_path: Path
) -> None:
    own_cluster = module_cluster
    url = own_cluster.new_database("frozen")
    migrate(url, tmp_path)
    broker: RunningBroker = start_replica(url, tmp_path)
    try:
        _frozen_then_thawed(own_cluster, broker, url, tmp_path)
    finally:
        thaw(own_cluster)
        stop_broker(broker)


def _frozen_then_thawed(
    cluster: pgcluster.Cluster, broker: RunningBroker, url: str, tmp_path: Path
) -> None:
    admin = broker.admin_headers()
    launch = {"agent_name": "frozen", "allowed_scope": ["read:data:*"]}
    bodies = [
        broker.register_body(broker.launch_token(["read:data:*"]), ["read:data:*"])[0]
        for _ in range(3)
    ]
    later = broker.register_body(broker.launch_token(["read:data:*"], ttl=600), ["read:data:*"])
    assert broker.get("/v1/health/ready").status_code == 200

    def write(i: int) -> Callable[[httpx.Client], httpx.Response]:
        if i < len(bodies):
            return lambda c: c.post("/v1/register", json=bodies[i])
        return lambda c: c.post("/v1/admin/launch-tokens", json=launch, headers=admin)

    clients = [httpx.Client(base_url=broker.url, timeout=60) for _ in range(8)]
    try:
        for client in clients:
            client.get("/v1/health/live")  # connected before the freeze
        freeze(cluster)
        frozen_at = time.monotonic()

        # The first wave meets a database that just stopped answering.
        barrier = threading.Barrier(len(clients))

        def first(i: int) -> tuple[float, httpx.Response]:
            barrier.wait()
            return _timed(lambda: write(i)(clients[i]))

        with ThreadPoolExecutor(len(clients)) as pool:
            wave = list(pool.map(first, range(len(clients))))
        slowest = max(took for took, _ in wave)
        for took, answer in wave:
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"].isdigit(), answer.headers
            assert answer.json()["error_code"] == "service_unavailable"
            assert took < WRITE_BOUND, f"a write took {took:.2f}s"

        # Then the broker knows: writes fail fast, and say when to retry.
        second = [_timed(lambda: write(5)(clients[0])) for _ in range(5)]
        for took, answer in second:
            assert answer.status_code == 503, answer.text
            assert "retry-after" in answer.headers
            assert took < FAST, f"a write took {took:.2f}s after the first wave"

        # Liveness never waits on storage; readiness says no, within its bound.
        took, live = _timed(lambda: clients[1].get("/v1/health/live"))
        assert live.status_code == 200 and took < 0.5
        took, health = _timed(lambda: clients[1].get("/v1/health"))
        assert health.status_code == 200 and took < 0.5, took
        assert health.json()["status"] == "degraded", health.json()
        took, ready = _timed(lambda: clients[1].get("/v1/health/ready"))
        assert ready.status_code == 503 and took < 3.0, (took, ready.text)
        assert "retry-after" in ready.headers
        print(  # noqa: T201 - the measured bound, for the record
            f"\nfrozen {time.monotonic() - frozen_at:.1f}s: first write wave <= {slowest:.2f}s, "
            f"then <= {max(t for t, _ in second):.2f}s"
        )
    finally:
        thaw(cluster)
        for client in clients:
            client.close()

    # SIGCONT: the broker recovers by itself, no restart.
    took = _wait_until(lambda: broker.post("/v1/register", json=later[0]).status_code == 200, 30)
    _wait_until(lambda: broker.get("/v1/health/ready").status_code == 200, 15)
    _wait_until(lambda: broker.get("/v1/health").json()["status"] == "ok", 15)
    print(f"recovered {took:.1f}s after SIGCONT")  # noqa: T201
    assert broker.register(["read:data:*"]).agent_id
    done = verify_chain(url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_read_ahead_past_its_deadline_is_an_outage(module_cluster: pgcluster.Cluster) -> None:
    """A first half's read on the event loop (decision 124) has the store's deadline:
    past it, its connection is cut, the outage noted, and the read answers
    ``Unavailable``; the next one goes to the thread path, which fails fast."""
    own_cluster = module_cluster
    store = PostgresStore(own_cluster.new_database("ahead"), limits=Limits(statement_timeout=0.5))
    try:

        async def main() -> tuple[float, BaseException | None, str]:
            await warm(store)  # the loop's connection, before the freeze
            freeze(own_cluster)
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await store.read_ahead(("one", "SELECT 2", ()))
            except Unavailable as exc:
                error = exc
            took = time.monotonic() - started
            try:
                await store.read_ahead(("one", "SELECT 3", ()))
            except InThread as exc:
                return took, error, exc.reason
            return took, error, ""

        took, error, then = asyncio.run(main())
        assert isinstance(error, Unavailable)
        assert "did not answer within 1s" in str(error.detail)
        assert 1.0 <= took < 1.0 + FAST
        assert then == "the database is not answering"
    finally:
        thaw(own_cluster)
        store.close()
