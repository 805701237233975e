# Would fail if: replicas sharing one PostgreSQL database tripped over each other's
# checkpoints (a replica restarting behind another's anchor, or with its own copy of the
# key directory), or if a database restored from pg_dump started without a word, or
# stayed refused after `tasklease db accept-restore`.
"""Replicas on one PostgreSQL database and the anchor of the audit log (core.rollback):
a legitimate fleet, with one shared key directory or a copy per replica, restarts as
often as it likes; a database restored from ``pg_dump`` into a new database is refused
until the restore is accepted."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pgcluster
import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker
from pg_e2e import start_replica, start_replica_with_own_keys, tasklease_in_process

from tasklease.rules.note import parse_checkpoint, parse_note

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]
FAST = {"TASKLEASE_AUDIT_CHECKPOINT_INTERVAL": "0.2"}


def _anchor_size(key_dir: Path) -> int:
    """The size of the checkpoint kept in ``key_dir`` (0 when none)."""
    files = list((key_dir / "log").glob("checkpoint-*"))
    if not files:
        return 0
    [anchor] = files
    return parse_checkpoint(parse_note(anchor.read_text()).text).size


def _wait_anchor(key_dir: Path, at_least: int) -> None:
    deadline = time.monotonic() + 20
    while _anchor_size(key_dir) < at_least:
        assert time.monotonic() < deadline, (_anchor_size(key_dir), at_least)
        time.sleep(0.1)


def _events(replica: RunningBroker) -> int:
    page = replica.get("/v1/audit/events", params={"limit": 1}, headers=replica.admin_headers())
    assert page.status_code == 200, page.text
    return int(page.json()["total"])


def _postgres_tool(cluster: pgcluster.Cluster, tool: str, *args: str) -> None:
    """``pg_dump`` or ``psql`` of the cluster's version, as the server's user when root."""
    found = cluster.bindir / tool
    if not found.exists():
        found = Path(shutil.which(tool) or tool)
    command = [str(found), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def _cli(data_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``tasklease`` (the code under test) on ``url``, in this process: the commands'
    effects are under test here, not their processes."""
    env = {"TASKLEASE_DATA_DIR": str(data_dir), "TASKLEASE_DATABASE": url, "COLUMNS": "400"}
    return tasklease_in_process(*args, env=env)


def test_replicas_sharing_a_key_directory_restart_without_tripping(
    pg_url: str, replicas: Replicas
) -> None:
    a, b = replicas(pg_url, env=FAST)
    keys = a.data_dir / "keys"
    for replica in (a, b, a):
        replica.register(["read:data:1"])
    _wait_anchor(keys, _events(a))
    stop_broker(a)  # it held the checkpoint lease: B signs nothing for a while
    b.register(["read:data:2"])  # the log grows past the anchor while A is away
    again = start_replica(pg_url, a.data_dir, FAST)
    replicas.track(again)  # type: ignore[attr-defined]
    again.register(["read:data:3"])
    stop_broker(b)
    stop_broker(again)
    for _ in range(2):  # both again, one after the other
        replicas.track(start_replica(pg_url, a.data_dir, FAST))  # type: ignore[attr-defined]


def test_replicas_with_their_own_copy_of_the_key_directory_never_trip(
    pg_url: str, replicas: Replicas, tmp_path: Path
) -> None:
    [a] = replicas(pg_url, n=1, env=FAST)
    a.register(["read:data:1"])
    _wait_anchor(a.data_dir / "keys", _events(a))
    # The second replica's key directory is a copy (cp -a), anchors and all.
    other = tmp_path / "other"
    b = start_replica_with_own_keys(pg_url, a.data_dir, other, FAST)
    replicas.track(b)  # type: ignore[attr-defined]
    for replica in (a, b, a, b):
        replica.register(["read:data:2"])
    _wait_anchor(a.data_dir / "keys", _events(a))  # A signs (it holds the lease)...
    assert _anchor_size(other / "keys") < _anchor_size(a.data_dir / "keys")  # ...B does not
    for replica, data in ((b, other), (a, a.data_dir)):
        stop_broker(replica)
        replicas.track(start_replica(pg_url, data, FAST))  # type: ignore[attr-defined]


def test_a_tenant_made_on_a_is_refused_by_a_replica_without_its_keys_until_they_are_copied(
    pg_url: str, replicas: Replicas, tmp_path: Path
) -> None:
    # Would fail if: a replica with its own copy of the key directory, taken before the
    # tenant existed, made keys of its own for it (its tokens would not verify on the
    # other replica, and two log keys would sign one log), or served it without a word,
    # or did not serve it once its key directory was copied over.
    [a] = replicas(pg_url, n=1)
    other = tmp_path / "other"
    b = start_replica_with_own_keys(pg_url, a.data_dir, other)
    replicas.track(b)  # type: ignore[attr-defined]
    acme_a = a.create_tenant("acme")
    agent = acme_a.register(["read:data:1"])
    theirs = other / "keys" / "tenants" / "acme"

    refused = b.get("/t/acme/v1/health")
    assert refused.status_code == 503, refused.text
    body = refused.json()
    assert body["error_code"] == "service_unavailable" and body["denial_id"].startswith("den_")
    assert (
        b.post("/t/acme/v1/token/validate", json={"token": agent.access_token}).status_code == 503
    )
    assert not theirs.exists()  # no key of its own
    assert "tenant acme is not served" in b.log() and str(theirs) in b.log()
    events = b.get(
        "/v1/audit/events",
        params={"event_type": "tenant_unavailable"},
        headers=b.admin_headers(),
    ).json()["events"]
    assert [e["detail"].endswith(f"denial={body['denial_id']}") for e in events] == [True]

    # What docs/operations.md says to do: copy the tenant's key directory over (cp -a).
    shutil.copytree(a.data_dir / "keys" / "tenants" / "acme", theirs, symlinks=True)
    deadline = time.monotonic() + 10
    while b.get("/t/acme/v1/health").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    acme_b = b.tenant("acme", acme_a.admin_secret)
    assert acme_b.is_valid(agent.access_token)  # one key, on both replicas


def test_a_database_restored_from_pg_dump_is_refused_until_accepted(
    pg_url: str, pg_cluster: pgcluster.Cluster, replicas: Replicas
) -> None:
    a, b = replicas(pg_url, env=FAST)
    agent = a.register(["read:data:1"])
    dump = pg_cluster.root / f"backup-{os.getpid()}-{time.monotonic_ns()}.sql"
    _postgres_tool(pg_cluster, "pg_dump", "--no-owner", "-f", str(dump), pg_url)  # the backup
    assert b.revoke("agent", agent.agent_id).status_code == 200  # after the backup
    assert not b.is_valid(agent.access_token)
    _wait_anchor(a.data_dir / "keys", _events(b))
    stop_broker(a)
    stop_broker(b)
    restored = pg_cluster.new_database("restored")
    _postgres_tool(pg_cluster, "psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), restored)
    dump.unlink()

    env = {**SHARED_ENV, **FAST, "TASKLEASE_DATABASE": restored}
    try:
        started = launch_broker(a.data_dir, env)
    except RuntimeError as refused:
        assert "error: the database went back in time" in str(refused)
        assert "tasklease db accept-restore" in str(refused)
    else:
        stop_broker(started)
        pytest.fail("a replica started on a restored database")

    accepted = _cli(a.data_dir, restored, "db", "accept-restore")
    assert accepted.returncode == 0, accepted.stderr
    assert "went back from" in accepted.stdout and "Issue them again" in accepted.stdout
    first = launch_broker(a.data_dir, env)
    replicas.track(first)  # type: ignore[attr-defined]
    second = launch_broker(a.data_dir, env)
    replicas.track(second)  # type: ignore[attr-defined]
    assert first.is_valid(agent.access_token)  # what the restore lost
    events = first.get(
        "/v1/audit/events",
        params={"event_type": "audit_rollback_accepted"},
        headers=first.admin_headers(),
    ).json()["events"]
    assert len(events) == 1
    verified = _cli(a.data_dir, restored, "audit", "verify", "--database", restored)
    assert verified.returncode == 0, verified.stderr
