"""State that must survive a restart, and the offline audit-chain check."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from e2e_support import RunningBroker, assert_problem, jwt_parts, run_cli

# uvicorn re-raises a captured SIGTERM after its graceful shutdown, so "stopped by
# SIGTERM" is a clean exit as well as 0.
CLEAN_EXIT = (0, -signal.SIGTERM)


def _sigterm(running: RunningBroker) -> int:
    running.client.close()
    running.proc.send_signal(signal.SIGTERM)
    code = running.proc.wait(timeout=15)
    assert code in CLEAN_EXIT, (code, running.log())
    return code


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``tasklease *args`` (every path in them absolute), run in this process: what the
    command says and its exit code are what these tests check, not the process."""
    return run_cli(list(args), {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"})


def test_restart_preserves_keys_revocations_apps_and_agents(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    data = tmp_path / "data"
    secret_file = tmp_path / "admin-secret"
    init = _cli("init", "--data-dir", str(data), "--secret-file", str(secret_file))
    assert init.returncode == 0, init.stderr
    secret = secret_file.read_text().strip()
    assert secret not in init.stdout
    assert (secret_file.stat().st_mode & 0o777) == 0o600

    first = start_broker(data, admin_secret=secret, use_env_secret=False)
    app = first.create_app(["read:data:*"])
    assert first.app_token(app)
    keeper = first.register(["read:data:*"], task_id="keeper")
    target = first.register(["read:data:y"], task_id="target")
    doomed = first.register(["read:data:z"], task_id="doomed")
    doomed_jti = jwt_parts(doomed.access_token)[1]["jti"]
    assert first.revoke("token", doomed_jti).status_code == 200
    assert not first.is_valid(doomed.access_token)
    kid_before = jwt_parts(keeper.access_token)[0]["kid"]
    # The counts are an operator's to read (first's admin token holds from before the restart).
    operator = first.admin_headers()
    events_before = first.get("/v1/health", headers=operator).json()["audit_events_count"]

    # Graceful stop: SIGTERM ends the process cleanly.
    _sigterm(first)

    second = start_broker(data, admin_secret=secret, use_env_secret=False)
    assert second.url != first.url or second.proc.pid != first.proc.pid
    health = second.get("/v1/health", headers=operator).json()
    assert health["audit_events_count"] == events_before
    # Same signing key: old tokens verify, and new ones are signed under the same kid.
    assert second.is_valid(keeper.access_token)
    assert second.is_valid(target.access_token)
    jwks_kids = [k["kid"] for k in second.get("/.well-known/jwks.json").json()["keys"]]
    assert kid_before in jwks_kids
    # Revocations are durable.
    assert not second.is_valid(doomed.access_token)
    assert_problem(second.post("/v1/token/renew", headers=doomed.bearer), 401, "unauthorized")
    # The app still authenticates with its original secret.
    assert second.app_token(app)
    # Agents are durable: delegation to an agent registered before the restart works.
    resp = second.delegate(keeper.access_token, target.agent_id, ["read:data:1"])
    assert resp.status_code == 200, resp.text
    assert second.is_valid(resp.json()["access_token"])
    # The previously issued admin token (same key) still works too.
    assert second.get("/v1/admin/apps", headers=first.admin_headers()).status_code == 200

    verify = _cli("audit", "verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout

    _sigterm(second)

    # Tamper with one stored event: the offline check names it and exits 1.
    database = data / "tasklease.db"
    conn = sqlite3.connect(database)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(audit_events)")]
        assert {"seq", "detail", "hash", "prev_hash"} <= set(columns)
        (count,) = conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()
        assert count >= 5
        with conn:
            changed = conn.execute(
                "UPDATE audit_events SET detail = detail || ' (edited)' WHERE seq = 3"
            ).rowcount
        assert changed == 1
    finally:
        conn.close()
    broken = _cli("audit", "verify", "--database", str(database))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "evt-000003" in broken.stdout + broken.stderr


def test_audit_verify_detects_a_deleted_event(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    data = tmp_path / "data"
    running = start_broker(data)
    running.register(["read:data:x"])
    running.register(["read:data:x"])
    _sigterm(running)
    database = data / "tasklease.db"
    ok = _cli("audit", "verify", "--database", str(database))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    conn = sqlite3.connect(database)
    try:
        with conn:
            conn.execute("DELETE FROM audit_events WHERE seq = 2")
    finally:
        conn.close()
    broken = _cli("audit", "verify", "--database", str(database))
    assert broken.returncode == 1
    assert "evt-000003" in broken.stdout + broken.stderr
    missing = _cli("audit", "verify", "--database", str(tmp_path / "nope.db"))
    assert missing.returncode == 2


def test_sigterm_closes_the_database(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    """A graceful stop closes the store, so SQLite checkpoints and removes its WAL.

    ``server.serve`` closes the store in a ``finally`` after ``uvicorn.run``; uvicorn
    re-raises the captured SIGTERM on its way out (``signal.raise_signal``), which kills
    the process before that ``finally`` runs: the close never happens and the
    ``-wal``/``-shm`` files are left behind.
    """
    data = tmp_path / "data"
    running = start_broker(data)
    running.register(["read:data:x"])
    assert (data / "tasklease.db-wal").exists()
    _sigterm(running)
    leftovers = sorted(p.name for p in data.glob("tasklease.db-*"))
    assert leftovers == [], f"store not closed on SIGTERM: {leftovers}"


def _leases(database: Path) -> list[str]:
    conn = sqlite3.connect(database)
    try:
        return sorted(name for (name,) in conn.execute("SELECT name FROM leases"))
    finally:
        conn.close()


def test_a_graceful_stop_gives_the_store_leases_up(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    """A process that stops cleanly gives up its background jobs' leases, so the process
    that replaces it signs audit checkpoints (sweeps, follows the feeds) from its first
    round, not once the lease it held expires (docs/decisions.md 150)."""
    data = tmp_path / "data"
    database = data / "tasklease.db"
    running = start_broker(data)
    running.register(["read:data:x"])
    deadline = time.monotonic() + 10.0
    while "audit-checkpoints" not in _leases(database):
        assert time.monotonic() < deadline, "the checkpoint job never took its lease"
        time.sleep(0.1)
    _sigterm(running)
    assert _leases(database) == []


def test_two_processes_on_one_data_dir_share_state(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    """A revocation committed by one process is enforced by another sharing the store."""
    data = tmp_path / "data"
    one = start_broker(data)
    two = start_broker(data)
    # A nonce from one process and a launch token from the other register fine.
    lt = one.launch_token(["read:data:*"])
    body, _ = two.register_body(lt, ["read:data:*"], nonce=one.nonce())
    resp = two.post("/v1/register", json=body)
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    assert one.is_valid(token)
    assert two.is_valid(token)
    assert one.revoke("agent", resp.json()["agent_id"]).status_code == 200
    assert not one.is_valid(token)
    deadline = time.monotonic() + 5.0
    while two.is_valid(token):
        assert time.monotonic() < deadline, "revocation never reached the second process"
        time.sleep(0.1)
    # The single-use token is spent for both.
    again, _ = one.register_body(lt, ["read:data:*"])
    assert_problem(one.post("/v1/register", json=again), 401, "unauthorized")


def test_key_rotation_reaches_another_process_sharing_the_keys(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    """`keys rotate` on one process: the other adopts the new key without a restart."""
    data = tmp_path / "data"
    one = start_broker(data)
    two = start_broker(data)
    before = {k["kid"] for k in two.get("/.well-known/jwks.json").json()["keys"]}
    rotated = one.post("/v1/admin/keys/rotate", headers=one.admin_headers())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    assert new_kid not in before
    deadline = time.monotonic() + 10.0
    while new_kid not in {k["kid"] for k in two.get("/.well-known/jwks.json").json()["keys"]}:
        assert time.monotonic() < deadline, "the second process never adopted the new key"
        time.sleep(0.1)
    # A token the first process signs with the new key validates on the second, and the
    # second now signs with it too.
    token = one.register(["read:data:*"]).access_token
    assert jwt_parts(token)[0]["kid"] == new_kid
    assert two.is_valid(token)
    assert jwt_parts(two.admin_token())[0]["kid"] == new_kid


def test_key_retirement_reaches_another_process_sharing_the_keys(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    """`keys retire` on one process: the other stops trusting the key without a restart,
    and a token it signed is refused by both."""
    data = tmp_path / "data"
    one = start_broker(data)
    two = start_broker(data)
    token = one.register(["read:data:*"]).access_token
    old_kid = jwt_parts(token)[0]["kid"]
    rotated = one.post("/v1/admin/keys/rotate", headers=one.admin_headers())
    assert rotated.status_code == 200, rotated.text
    retired = one.post(f"/v1/admin/keys/{old_kid}/retire", headers=one.admin_headers())
    assert retired.status_code == 200, retired.text
    assert not one.is_valid(token)
    deadline = time.monotonic() + 10.0
    while old_kid in {k["kid"] for k in two.get("/.well-known/jwks.json").json()["keys"]}:
        assert time.monotonic() < deadline, "the second process never dropped the key"
        time.sleep(0.1)
    assert not two.is_valid(token)


# Would fail if: `audit verify` run on a stopped broker's own data directory, without
# --log-key, did not check the signed checkpoint the broker stored with the broker's own
# log keys (read from its key directory), or took the checkpoint's word over the events.
def test_audit_verify_holds_the_events_to_the_checkpoint_the_broker_signed(
    tmp_path: Path, start_broker: Callable[..., RunningBroker]
) -> None:
    data = tmp_path / "data"
    running = start_broker(data)
    running.register(["read:data:x"])
    running.register(["read:data:x"])
    _sigterm(running)
    ok = _cli("audit", "verify", "--data-dir", str(data))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    said = " ".join((ok.stdout + ok.stderr).split())
    assert "in the database matches" in said, said
    assert "not checked" not in said and "no signed checkpoint" not in said, said

    # A stored checkpoint the broker's log key did not sign (here its note edited).
    database = data / "tasklease.db"
    conn = sqlite3.connect(database)
    try:
        with conn:
            conn.execute("UPDATE audit_checkpoints SET note = replace(note, 'a', 'b')")
    finally:
        conn.close()
    broken = _cli("audit", "verify", "--data-dir", str(data))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "checkpoint broken" in broken.stderr, broken.stderr
