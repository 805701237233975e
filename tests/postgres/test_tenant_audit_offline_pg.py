# Would fail if: on PostgreSQL, with two replicas writing one tenant's log, the offline
# `tasklease --tenant NAME audit verify` left the checkpoint signed for that tenant
# unchecked, or did not find a tenant (removed or not) the database holds.
"""Offline verification of tenants' logs written by two replicas on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import RunningBroker

pytestmark = pytest.mark.slow


def _verify(url: str, data: Path, tenant: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TASKLEASE_DATABASE": url})
    done = subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "--tenant", tenant, "audit", "verify"]
        + ["--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(data),
        env=env,
        check=False,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_each_tenants_log_written_by_two_replicas_verifies_offline_with_its_keys(
    pg_url: str, replicas: Callable[..., list[RunningBroker]]
) -> None:
    a, b = replicas(pg_url)
    acme_a = a.create_tenant("acme")
    acme_b = b.tenant("acme", acme_a.admin_secret)
    acme_a.register(["read:data:x"])
    acme_b.register(["read:data:x"])
    beta = b.create_tenant("beta")
    beta.register(["read:data:y"])
    # Its log checkpointed before its removal: a removed tenant is no longer served, so
    # nothing signs its log when the replicas stop.
    deadline = time.monotonic() + 30
    while beta.get("/v1/audit/checkpoint", headers=beta.admin_headers()).status_code != 200:
        assert time.monotonic() < deadline, "beta's log was never checkpointed"
        time.sleep(0.2)
    gone = b.client.delete("/v1/admin/tenants/beta", headers=b.admin_headers())
    assert gone.status_code == 200, gone.text
    for running in (a, b):
        running.client.close()
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(timeout=15)
    for name in ("acme", "beta"):
        code, said = _verify(pg_url, a.data_dir, name)
        assert code == 0, said
        assert "in the database matches" in said and "was not checked" not in said, said
    code, said = _verify(pg_url, a.data_dir, "gamma")
    assert code == 1 and "no tenant gamma" in said, said
