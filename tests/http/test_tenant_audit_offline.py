# Would fail if: `tasklease --tenant NAME audit verify` on a stopped broker's data
# directory left the signed checkpoint the broker stored for that tenant unchecked (as it
# does not for the default tenant), read another tenant's log keys for it, or answered
# "audit chain intact" for a tenant the database does not hold (a typo of its name).
"""Offline ``audit verify`` of a tenant's own log, as the platform's operator runs it on
the data directory (also after the tenant's removal, when nothing of it is served)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import RunningBroker, run_cli

pytestmark = pytest.mark.slow


def _stop(running: RunningBroker) -> None:
    running.client.close()
    running.proc.send_signal(signal.SIGTERM)
    running.proc.wait(timeout=15)


def _verify(data: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "HOME": str(data.parent)})
    # In this process: what the command says and its exit code are checked, not the process.
    done = run_cli([*args, "audit", "verify", "--data-dir", str(data)], env)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_tenants_log_is_held_to_the_checkpoint_its_own_log_key_signed(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    data = tmp_path / "data"
    running = start_broker(data)
    acme = running.create_tenant("acme")
    acme.register(["read:data:x"])
    beta = running.create_tenant("beta")
    beta.register(["read:data:x"])
    removed = running.client.delete("/v1/admin/tenants/beta", headers=running.admin_headers())
    assert removed.status_code == 200, removed.text
    _stop(running)
    for name in ("acme", "beta"):  # beta: removed, its log kept in the database only
        code, said = _verify(data, "--tenant", name)
        assert code == 0, said
        assert "not read offline" not in said and "was not checked" not in said, said
        assert "in the database matches" in said, said


def test_a_tenant_the_database_does_not_hold_is_not_reported_intact(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    data = tmp_path / "data"
    running = start_broker(data)
    running.create_tenant("acme")
    _stop(running)
    code, said = _verify(data, "--tenant", "acmee")
    assert code == 1, said
    assert "intact" not in said and "no tenant acmee" in said, said
    assert "tenant list" in said, said  # what to do: see which tenants there are
