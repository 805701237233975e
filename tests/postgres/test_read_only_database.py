"""A replica whose PostgreSQL server turns read-only (``default_transaction_read_only``,
or a standby after a failover) under it.

Seen under faults: every write answered 503 ``storage error``, and the log said
``storage error`` too: nothing told the operator the database had become read-only
(SQLSTATE 25006, ``read_only_sql_transaction``). The 503 and the log must say so, the
readiness answer too, and writes must go through again once the server takes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import pytest
from e2e_support import RunningBroker
from pgcluster import Cluster

pytestmark = pytest.mark.slow


def _database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _set_read_only(cluster: Cluster, url: str, on: bool) -> None:
    """Make the database read-only (or not) for every new session, and end the sessions
    open on it, the replica's pooled ones among them."""
    name = _database_of(url)
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def test_a_read_only_database_is_named_in_the_503_the_log_and_readiness(
    pg_cluster: Cluster, pg_url: str, replicas: Callable[..., list[RunningBroker]]
) -> None:
    (broker,) = replicas(pg_url, n=1)
    bodies = [
        broker.register_body(broker.launch_token(["read:data:*"], ttl=600), ["read:data:*"])[0]
        for _ in range(3)
    ]
    assert broker.post("/v1/register", json=bodies[0]).status_code == 200

    _set_read_only(pg_cluster, pg_url, True)
    try:
        deadline = time.monotonic() + 30
        while True:
            answer = broker.post("/v1/register", json=bodies[1])
            assert answer.status_code == 503, answer.text
            problem = answer.json()
            if "read-only" in problem["detail"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # a connection lost to the termination first
        assert problem["error_code"] == "service_unavailable"
        assert "the database is read-only" in problem["detail"], problem
        assert answer.headers["retry-after"].isdigit()
        ready = broker.get("/v1/health/ready")
        assert ready.status_code == 503, ready.text
        assert "read-only" in ready.json()["detail"], ready.text
        log = broker.log()
        assert "the database is read-only" in log, log[-4000:]
        assert "storage error" not in log, log[-4000:]
    finally:
        _set_read_only(pg_cluster, pg_url, False)

    deadline = time.monotonic() + 30
    while True:
        answer = broker.post("/v1/register", json=bodies[2])
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    assert broker.is_valid(answer.json()["access_token"])
