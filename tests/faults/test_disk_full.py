"""The SQLite database's disk fills up under a running broker, then space is freed.

Writes must fail closed, saying the disk is full (503 with ``Retry-After``, logged once,
no token without its audit event), reads must go on (validation, JWKS, audit queries),
``/v1/health`` must say so and ``/v1/health/ready`` refuse, the database must stay intact
(``tasklease audit verify``, ``PRAGMA integrity_check``), and the broker must recover by
itself once space is freed. On a real, small filesystem (a tmpfs mounted for the test).
"""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker
from pg_e2e import tasklease_cli

pytestmark = pytest.mark.slow


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses another byte; return it."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def _wait_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started


def _registered_without_audit(database: Path) -> list[str]:
    """Agents in the database without their registration's audit event."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        agents = {row[0] for row in conn.execute("SELECT agent_id FROM agents")}
        audited = {
            row[0]
            for row in conn.execute(
                "SELECT agent_id FROM audit_events WHERE event_type = 'agent_registered'"
            )
        }
    return sorted(agents - audited)


def test_a_full_disk_fails_writes_closed_keeps_reads_and_recovers(small_disk: Path) -> None:
    data_dir = small_disk / "data"
    broker = launch_broker(data_dir, SHARED_ENV)
    try:
        _fill_and_free(broker, small_disk, data_dir)
    finally:
        stop_broker(broker)


def _fill_and_free(broker: RunningBroker, disk: Path, data_dir: Path) -> None:
    admin = broker.admin_headers()
    agent = broker.register(["read:data:*"])
    bodies = [
        broker.register_body(broker.launch_token(["read:data:*"], ttl=600), ["read:data:*"])[0]
        for _ in range(3)
    ]
    launch = {"agent_name": "full", "allowed_scope": ["read:data:*"]}
    assert broker.get("/v1/health/ready").status_code == 200
    events_before = broker.get("/v1/audit/events", headers=admin).json()["total"]

    filler = _fill(disk)

    # Writes fail closed and say why.
    refused = [broker.post("/v1/register", json=body) for body in bodies]
    refused += [broker.post("/v1/admin/launch-tokens", json=launch, headers=admin)]
    refused += [broker.post("/v1/admin/launch-tokens", json=launch, headers=admin)]
    refused += [broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})]
    for answer in refused:
        assert answer.status_code == 503, answer.text
        problem = answer.json()
        assert problem["error_code"] == "service_unavailable"
        assert "disk" in problem["detail"] and "full" in problem["detail"], problem
        assert answer.headers["retry-after"].isdigit()
        assert "access_token" not in problem and "launch_token" not in problem

    # Reads go on: validation, the JWKS, audit queries.
    assert broker.is_valid(agent.access_token)
    assert broker.get("/.well-known/jwks.json").status_code == 200
    page = broker.get("/v1/audit/events", headers=admin)
    assert page.status_code == 200, page.text

    # Health says so at once; readiness refuses.
    assert broker.get("/v1/health/live").status_code == 200
    health = broker.get("/v1/health").json()
    assert health["status"] == "degraded" and "full" in health["reason"], health
    ready = broker.get("/v1/health/ready")
    assert ready.status_code == 503 and "full" in ready.json()["detail"], ready.text

    # Logged once, however many writes failed.
    log = broker.log()
    assert log.count("audit writes fail") == 1, log[-3000:]

    # Space comes back: the broker recovers by itself.
    filler.unlink()
    took = _wait_until(
        lambda: (
            broker.post("/v1/admin/launch-tokens", json=launch, headers=admin).status_code == 201
        ),
        15,
    )
    assert took < 15
    assert broker.register(["read:data:*"]).agent_id
    _wait_until(lambda: broker.get("/v1/health/ready").status_code == 200, 10)
    _wait_until(lambda: broker.get("/v1/health").json()["status"] == "ok", 10)
    assert "audit writes succeed again" in broker.log()

    # Nothing refused left a trace; the file is intact and the chain whole.
    total = broker.get("/v1/audit/events", headers=admin).json()["total"]
    assert total > events_before
    database = data_dir / "tasklease.db"
    assert _registered_without_audit(database) == []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    done = tasklease_cli("audit", "verify", "--database", str(database), env={}, cwd=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
