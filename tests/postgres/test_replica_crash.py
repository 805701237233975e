"""A replica on PostgreSQL killed (SIGKILL) in the middle of its batches: what it
acknowledged holds on the other replica at once (revocations in force and in the feed,
issued tokens and answered refusals in the audit log), it starts again on the same
database and key directory without ``db accept-restore``, and the log verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from e2e_support import RunningBroker, jwt_parts
from pg_e2e import start_replica

_FAULTS = str(Path(__file__).resolve().parents[1] / "faults")
if _FAULTS not in sys.path:
    sys.path.insert(0, _FAULTS)

from test_crash_durability import Ledger, _loop, _valid_on_fresh_connections  # noqa: E402

pytestmark = pytest.mark.slow


def test_a_replica_killed_mid_batch_loses_nothing_it_acknowledged(
    pg_url: str, replicas: Callable[..., list[RunningBroker]]
) -> None:
    victim, survivor = replicas(pg_url, n=2)
    admin = victim.admin_token()
    ledger, stop = Ledger(), threading.Event()
    threads = [
        threading.Thread(target=_loop, args=(victim.url, admin, ledger, stop, seed))
        for seed in range(6)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 90
    while ledger.acked < 80:
        assert not ledger.errors, ledger.errors
        assert time.monotonic() < deadline, f"only {ledger.acked} acknowledged"
        time.sleep(0.01)
    stop.set()
    victim.proc.kill()
    victim.proc.wait(timeout=15)
    for thread in threads:
        thread.join(timeout=30)
    assert not ledger.errors, ledger.errors
    assert ledger.registered and ledger.revoked and ledger.denials

    for _level, target, token in ledger.revoked:
        assert _valid_on_fresh_connections(survivor.url, token, 1) == {False}, target
    feed = survivor.get("/v1/revocations", headers=survivor.admin_headers())
    entries = {(e["level"], e["target"]) for e in feed.json()["revocations"]}
    for level, target, _ in ledger.revoked:
        assert (level, target) in entries, f"{level} {target} missing from the feed"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        details = "\n".join(row[0] for row in conn.execute("SELECT detail FROM audit_events"))
    for held in ledger.registered:
        assert f"jti={jwt_parts(held.token)[1]['jti']}" in details
    for denial in ledger.denials:
        assert f"denial={denial}" in details

    victim.client.close()
    again = start_replica(pg_url, victim.data_dir)  # no accept-restore after a crash
    replicas.track(again)  # type: ignore[attr-defined]
    assert again.get("/v1/health/ready").status_code == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    verify = subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "audit", "verify", "--database", pg_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
