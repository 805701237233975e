# Would fail if: `tasklease --tenant NAME audit verify` on a stopped broker's data
# directory left the signed checkpoint the broker stored for that tenant unchecked (as it
# does not for the default tenant), read another tenant's log keys for it, or answered
# "audit chain intact" for a tenant the database does not hold (a typo of its name); or
# if a removed tenant's log, which no broker serves, could not be exported from it.
"""Offline ``audit verify`` and ``audit export`` of a tenant's own log, as the platform's
operator runs them on the data directory (also after the tenant's removal, when nothing
of it is served)."""

from __future__ import annotations

import json
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


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "HOME": str(data.parent), **extra})
    return env


def _verify(data: Path, *args: str) -> tuple[int, str]:
    # In this process: what the command says and its exit code are checked, not the process.
    done = run_cli([*args, "audit", "verify", "--data-dir", str(data)], _env(data))
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def _export_over_http(data: Path, tenant: RunningBroker, name: str) -> tuple[int, list[str]]:
    url = tenant.url.rsplit("/t/", 1)[0]
    env = _env(
        data,
        TASKLEASE_URL=url,
        TASKLEASE_OPERATOR="admin",
        TASKLEASE_OPERATOR_SECRET=tenant.admin_secret,
    )
    done = run_cli(["--tenant", name, "audit", "export"], env)
    return done.returncode, done.stdout.splitlines()


def test_a_tenants_log_is_held_to_the_checkpoint_its_own_log_key_signed(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    data = tmp_path / "data"
    running = start_broker(data)
    acme = running.create_tenant("acme")
    acme.register(["read:data:x"])
    beta = running.create_tenant("beta")
    beta.register(["read:data:x"])
    code, served = _export_over_http(data, beta, "beta")
    assert code == 0 and served, served
    removed = running.client.delete("/v1/admin/tenants/beta", headers=running.admin_headers())
    assert removed.status_code == 200, removed.text
    assert _export_over_http(data, beta, "beta")[0] != 0  # no broker serves it any more
    _stop(running)
    for name in ("acme", "beta"):  # beta: removed, its log kept in the database only
        code, said = _verify(data, "--tenant", name)
        assert code == 0, said
        assert "not read offline" not in said and "was not checked" not in said, said
        assert "in the database matches" in said, said

    # The removed tenant's log is exported from the database as the broker served it.
    out = tmp_path / "beta-audit.jsonl"
    done = run_cli(
        ["--tenant", "beta", "audit", "export", "--data-dir", str(data), "-o", str(out)],
        _env(data),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.stat().st_mode & 0o077 == 0
    exported = out.read_text().splitlines()
    assert exported[: len(served)] == served
    events = [json.loads(line) for line in exported]
    assert {event["tenant"] for event in events} == {"beta"}
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    # Its filters are the broker's; the broker's own log is not the tenant's.
    done = run_cli(
        ["--tenant", "beta", "audit", "export", "--data-dir", str(data), "--event-type",
         "agent_registered"],
        _env(data),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    registered = [json.loads(line) for line in done.stdout.splitlines()]
    assert registered and {e["event_type"] for e in registered} == {"agent_registered"}
    own = run_cli(["audit", "export", "--data-dir", str(data)], _env(data))
    assert own.returncode == 0 and "beta" not in {
        json.loads(line)["tenant"] for line in own.stdout.splitlines()
    }
    both = run_cli(
        ["audit", "export", "--data-dir", str(data), "--url", "http://127.0.0.1:9"], _env(data)
    )
    assert both.returncode == 2 and "not both" in both.stderr


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
