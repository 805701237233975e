# Would fail if: a broker started on a database restored from a backup (taken as
# docs/operations.md says) without a word, so that the revocations made after the backup
# were silently undone and its log key went on to sign a fork; if the refusal did not say
# what was found and what to do; if `tasklease db accept-restore` (docs/operations.md's
# commands, run as written) did not record the rollback, rotate the log key and let the
# broker start with `audit verify` passing; if a restart without a restore, or after a
# kill, were refused; or if the trust bundle's spiffe_sequence went back with the database,
# so that a federated peer refused the broker's next bundle and kept its removed keys.
"""A restored SQLite database, with real broker processes (``tasklease serve``) and the
documented commands: the backup is SQLite's online backup of the live file, the restore a
copy of it over the stopped broker's file. A federated peer is an in-process broker of
another trust domain judging each bundle this broker served (``Federation.accept_bundle``:
a fetched bundle whose sequence went backwards is refused)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cli_forks
import pytest
from e2e_support import (
    SHARED_ENV,
    RunningBroker,
    jwt_parts,
    launch_broker,
    stop_broker,
)

from tasklease.core.broker import Broker
from tasklease.core.clock import SystemClock
from tasklease.core.config import Config
from tasklease.core.kernel import RequestContext
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.rules.bundle import parse_bundle
from tasklease.rules.note import parse_checkpoint, parse_note
from tasklease.storage import MemoryStore

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
HOME = "tasklease.local"  # the broker's trust domain (the default)
CTX = RequestContext(request_id="req-restore")


def _doc_block(marker: str) -> list[str]:
    found = re.search(
        rf"<!-- {marker}: run by tests/cli/test_restore.py -->\n```sh\n(.*?)```",
        DOC.read_text(),
        re.S,
    )
    assert found, f"no {marker} block in {DOC}"
    return [line for line in found.group(1).splitlines() if line.strip()]


def _env(data_dir: Path, bindir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"TASKLEASE_DATA_DIR": str(data_dir), "COLUMNS": "400", "NO_COLOR": "1"})
    if bindir is not None:
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    return env


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tasklease *args``: a process forked from one that made the CLI's imports."""
    return cli_forks.run(args, cwd=data_dir, env=_env(data_dir), timeout=60)


def _backup(data_dir: Path, into: Path) -> Path:
    """``sqlite3 tasklease.db ".backup ..."``: SQLite's online backup of the live file."""
    source, copy = sqlite3.connect(data_dir / "tasklease.db"), sqlite3.connect(into)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return into


def _events(data_dir: Path) -> int:
    """How many audit events the database holds."""
    with contextlib.closing(sqlite3.connect(data_dir / "tasklease.db")) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()
    return int(count)


def _restore(backup: Path, data_dir: Path) -> None:
    database = data_dir / "tasklease.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(backup.read_bytes())


def _refused_start(data_dir: Path) -> str:
    """Start the broker and expect it to refuse: its one error line."""
    try:
        started = launch_broker(data_dir, dict(SHARED_ENV))
    except RuntimeError as refused:
        message = str(refused)
    else:
        stop_broker(started)
        pytest.fail("the broker started on a database that went back in time")
    assert message.startswith("broker exited with 2: "), message
    lines = [line for line in message.split(": ", 1)[1].splitlines() if line.strip()]
    # One error line; anything else is a structured log line (a start-up warning).
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, message
    assert all(line.startswith("{") for line in lines if line not in errors), message
    assert "Traceback" not in message
    return errors[0]


def _bundle(broker: RunningBroker) -> bytes:
    answer = broker.get("/v1/federation/bundle")
    assert answer.status_code == 200, answer.text
    return bytes(answer.content)


def _sequence(document: bytes) -> int:
    sequence = parse_bundle(document, HOME).sequence
    assert sequence is not None
    return sequence


class Peer:
    """Another trust domain's broker that federates with this one: it keeps each bundle
    it fetched only if its sequence did not go backwards (core.federation)."""

    def __init__(self) -> None:
        self.broker = Broker(
            Config(trust_domain="b.example", issuer="https://b.example"),
            MemoryStore(),
            KeyRing.generate(),
            clock=SystemClock(),
            nonce_secret=b"n" * 32,
        )
        cfg = self.broker.config
        _, claims = mint(
            self.broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=int(time.time()),
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        self.record, _ = self.broker.federation.add(
            claims,
            trust_domain=HOME,
            bundle_endpoint_url=f"https://{HOME}/v1/federation/bundle",
            ctx=CTX,
        )

    def fetched(self, document: bytes) -> list[str]:
        """Judge a bundle just fetched; return the kids it now trusts.

        Raises:
            BundleRefused: its sequence went backwards (the keys trusted stay).
        """
        record = self.broker.federation.accept_bundle(
            HOME, document, version=self.record.created_at, now=time.time()
        )
        return sorted(parse_bundle(record.bundle, HOME).keys)


def _rollback_events(broker: RunningBroker) -> list[dict[str, Any]]:
    answer = broker.get(
        "/v1/audit/events",
        params={"event_type": "audit_rollback_accepted"},
        headers=broker.admin_headers(),
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["events"])


def test_a_restored_database_is_refused_until_the_restore_is_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    peer = Peer()
    broker = launch_broker(data, dict(SHARED_ENV))
    try:
        agent = broker.register(["read:data:1"])
        jti = jwt_parts(agent.access_token)[1]["jti"]
        before = _bundle(broker)
        peer.fetched(before)
        backup = _backup(data, tmp_path / "backup.db")
        # After the backup: a revocation, and a new signing key the peer fetches.
        assert broker.revoke("token", jti).status_code == 200
        assert not broker.is_valid(agent.access_token)
        rotated = broker.post("/v1/admin/keys/rotate", headers=broker.admin_headers())
        assert rotated.status_code == 200, rotated.text
        deadline = time.monotonic() + 10
        while _sequence(_bundle(broker)) == _sequence(before):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        peer_saw = _bundle(broker)
        assert len(peer.fetched(peer_saw)) == 2
    finally:
        stop_broker(broker)
    # Stopped (however soon after its last write): a checkpoint of all it wrote is kept.
    [anchor] = sorted((data / "keys" / "log").glob("checkpoint-*"))
    assert parse_checkpoint(parse_note(anchor.read_text()).text).size == _events(data)

    _restore(backup, data)
    error = _refused_start(data)
    assert "error: the database went back in time: the audit log of tenant default is behind" in (
        error
    )
    anchors = sorted((data / "keys" / "log").glob("checkpoint-*"))
    assert len(anchors) == 1 and str(anchors[0]) in error
    kept = parse_checkpoint(parse_note(anchors[0].read_text()).text)
    restored_size = _events(data)
    assert f"{restored_size} events" in error and f"{kept.size} events" in error
    assert kept.size > restored_size
    assert "`tasklease db accept-restore` (docs/operations.md, Backups)" in error
    assert "revocations made since are lost" in error

    # The bundle's sequence is floored by the time in whole milliseconds, which has passed
    # what the peer holds by now (the residual of decisions 144 and 154 is a restore
    # within that millisecond).
    assert int(time.time() * 1000) > _sequence(peer_saw)

    # The documented way forward, as written: accept, then verify the log.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "tasklease"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tasklease.cli.main "$@"\n')
    launcher.chmod(0o755)
    accept, verify = _doc_block("restore")
    assert accept == "tasklease db accept-restore" and verify == "tasklease audit verify"
    outputs = []
    for command in (accept, verify):
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=data,
            env=_env(data, bindir),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout)
    said = outputs[0]
    assert f"went back from {kept.size} events" in said and f"to {restored_size}" in said
    assert "audit_rollback_accepted" in said
    assert "Revocations and removals made after the backup are lost" in said
    assert "Key retirements the key directory kept are recorded again" in said
    assert "Issue them again now" in said
    assert "audit chain intact" in outputs[1]
    # Nothing more to accept: a second run says so.
    again = _cli(data, "db", "accept-restore")
    assert again.returncode == 0 and "Nothing to accept" in again.stdout, again

    broker = launch_broker(data, dict(SHARED_ENV))
    try:
        # What the restore lost, as the command said: the revoked token is valid again.
        assert broker.is_valid(agent.access_token)
        assert broker.revoke("token", jti).status_code == 200
        assert not broker.is_valid(agent.access_token)
        [event] = _rollback_events(broker)
        for fact in (f"{restored_size} events", f"{kept.size} events", "accepted by"):
            assert fact in event["detail"]
        log_keys = broker.get("/v1/audit/log-keys", headers=broker.admin_headers()).json()
        assert len(log_keys["keys"]) == 2  # a new log key signs; the old one still verifies
        # The bundle published after the restore is numbered past what the peer saw (the
        # restored database held an older number), and the peer takes it.
        after = _bundle(broker)
        assert _sequence(after) > _sequence(peer_saw)
        assert peer.fetched(after) == sorted(parse_bundle(after, HOME).keys)
    finally:
        stop_broker(broker)
    assert _cli(data, "audit", "verify").returncode == 0
    # A restart with nothing restored starts, as every restart does.
    stop_broker(launch_broker(data, dict(SHARED_ENV)))


def test_restarts_without_a_restore_start_even_after_a_kill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**SHARED_ENV, "TASKLEASE_AUDIT_CHECKPOINT_INTERVAL": "0.2"}
    for round_ in range(3):
        broker = launch_broker(data, env)
        broker.register(["read:data:1"])
        if round_ == 1:  # killed, not stopped: no checkpoint on the way out
            time.sleep(1.0)
            broker.proc.send_signal(signal.SIGKILL)
            broker.proc.wait(timeout=10)
            broker.client.close()
        else:
            stop_broker(broker)
    assert len(list((data / "keys" / "log").glob("checkpoint-*"))) == 1


def _anchored(data: Path) -> int:
    """The size of the checkpoint kept as the default log's anchor (0: none yet)."""
    anchors = sorted((data / "keys" / "log").glob("checkpoint-*"))
    if not anchors:
        return 0
    with contextlib.suppress(OSError, ValueError):  # being replaced right now
        return parse_checkpoint(parse_note(anchors[0].read_text()).text).size
    return 0


def test_a_restore_behind_a_checkpoint_made_before_a_kill_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**SHARED_ENV, "TASKLEASE_AUDIT_CHECKPOINT_INTERVAL": "0.2"}
    broker = launch_broker(data, env)
    agent = broker.register(["read:data:1"])
    backup = _backup(data, tmp_path / "backup.db")
    broker.revoke("agent", agent.agent_id)
    events = _events(data)
    deadline = time.monotonic() + 10
    while True:  # the periodic checkpoint covers the revocation
        answer = broker.get("/v1/audit/checkpoint", headers=broker.admin_headers())
        if answer.status_code == 200 and int(answer.text.split("\n")[1]) >= events:
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.05)
    # Served only once kept as the anchor (docs/security.md, TM-68): a crash from here on
    # cannot leave the anchor behind what was served.
    assert _anchored(data) >= events
    broker.proc.send_signal(signal.SIGKILL)  # a crash: nothing more is signed
    broker.proc.wait(timeout=10)
    broker.client.close()
    _restore(backup, data)
    assert "the database went back in time" in _refused_start(data)


def _retired_rows(data_dir: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(data_dir / "tasklease.db")) as conn:
        return {kid for (kid,) in conn.execute("SELECT kid FROM retired_signing_keys")}


def test_a_key_retirement_the_restore_lost_is_recorded_again_once_served(tmp_path: Path) -> None:
    """A restore onto the stopped broker loses the retirement's row; the key directory
    kept the kid, so the broker started after `db accept-restore` records it again (one
    `signing_key_retirements_restored` event), for every replica with a copy of the keys."""
    data = tmp_path / "data"
    broker = launch_broker(data, dict(SHARED_ENV))
    try:
        rotated = broker.post("/v1/admin/keys/rotate", headers=broker.admin_headers())
        assert rotated.status_code == 200, rotated.text
        backup = _backup(data, tmp_path / "backup.db")
        old_kid = next(
            key["kid"]
            for key in broker.get("/.well-known/jwks.json").json()["keys"]
            if key["kid"] != rotated.json()["kid"]
        )
        broker._admin_token = None  # signed by the key about to go
        retired = broker.post(f"/v1/admin/keys/{old_kid}/retire", headers=broker.admin_headers())
        assert retired.status_code == 200, retired.text
    finally:
        stop_broker(broker)
    assert _retired_rows(data) == {old_kid}
    _restore(backup, data)
    assert _retired_rows(data) == set()
    assert "went back in time" in _refused_start(data)
    accepted = _cli(data, "db", "accept-restore")
    assert accepted.returncode == 0, accepted

    broker = launch_broker(data, dict(SHARED_ENV))
    try:
        deadline = time.monotonic() + 10
        while old_kid not in _retired_rows(data):
            assert time.monotonic() < deadline, "the retirement the restore lost stays lost"
            time.sleep(0.1)
        answer = broker.get(
            "/v1/audit/events",
            params={"event_type": "signing_key_retirements_restored"},
            headers=broker.admin_headers(),
        )
        assert answer.status_code == 200, answer.text
        [event] = answer.json()["events"]
        assert f"kid={old_kid}" in event["detail"]
        assert old_kid not in {
            k["kid"] for k in broker.get("/.well-known/jwks.json").json()["keys"]
        }
    finally:
        stop_broker(broker)
