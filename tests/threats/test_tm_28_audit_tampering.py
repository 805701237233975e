# Would fail if: an event's hash stopped covering one of its fields (detail, outcome,
# agent_id…), or verification stopped comparing each event's prev_hash with the hash of
# the event before it.
"""TM-28 — audit tampering: an insider or an intruder with access to the database edits
an event (hides a registration, turns a denial into a success), deletes one, or cuts the
log short, to cover a misuse of credentials.

The HTTP API has no way to change the log, and only the operator reads it. Each event's
SHA-256 hash covers all its fields and its predecessor's hash, so ``tasklease audit
verify`` names the first event that no longer fits. A rewrite carried through to the
last event, or a cut at the end, leaves a chain that is consistent in itself: it shows
only against a head hash kept outside the database (signed checkpoints and witnesses
are not built yet; docs/security.md, TM-28).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import RunningBroker
from threat_support import audit_events, bearer, refused

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def history(broker: RunningBroker) -> str:
    """Some credential history, one denial in it; returns the head hash an operator
    would keep elsewhere."""
    agent = broker.register(["read:tickets:1"], task_id="task-cover-up")
    broker.post("/v1/token/renew", headers=bearer("not-a-token"))
    broker.revoke("agent", agent.agent_id)
    broker.register(["read:tickets:2"])
    return audit_events(broker)[-1]["hash"]


def _copy(broker: RunningBroker, into: Path) -> Path:
    """A consistent copy of the live database (SQLite's online backup)."""
    target = into / "copy.db"
    source = sqlite3.connect(broker.data_dir / "tasklease.db")
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return target


def _tamper(database: Path, *statements: str) -> None:
    conn = sqlite3.connect(database)
    try:
        with conn:
            for statement in statements:
                assert conn.execute(statement).rowcount >= 1, statement
    finally:
        conn.close()


def _verify(database: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tasklease.cli.main",
            "audit",
            "verify",
            "--database",
            str(database),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=database.parent,
        timeout=60,
        check=False,
    )


def _seq(broker: RunningBroker, event_type: str, **match: str) -> int:
    for event in audit_events(broker, event_type=event_type):
        if all(event[k] == v for k, v in match.items()):
            return int(event["seq"])
    raise AssertionError(f"no {event_type} event")


def test_the_api_cannot_change_the_log_and_only_the_operator_reads_it(
    broker: RunningBroker, history: str
) -> None:
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        resp = broker.client.request(method, "/v1/audit/events", headers=broker.admin_headers())
        assert resp.status_code == 405, (method, resp.text)
    agent = broker.register(["read:tickets:3"])
    app_token = broker.app_token(broker.create_app(["read:tickets:*"]))
    for token in (agent.access_token, app_token):
        refused(
            broker, broker.get("/v1/audit/events", headers=bearer(token)), 403, "insufficient_scope"
        )


def test_an_intact_copy_verifies_with_the_anchored_head(
    broker: RunningBroker, history: str, tmp_path: Path
) -> None:
    database = _copy(broker, tmp_path)
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq").fetchall()
    finally:
        conn.close()
    anchored = [seq for seq, digest in rows if digest == history]
    assert anchored, "the anchored head is in the log"
    _tamper(database, f"DELETE FROM audit_events WHERE seq > {anchored[0]}")
    intact = _verify(database)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert history in intact.stdout


@pytest.mark.parametrize(
    ("edit", "target", "named_after"),
    [
        ("UPDATE audit_events SET detail = 'nothing happened' WHERE seq = {seq}", "registered", 0),
        ("UPDATE audit_events SET agent_id = '' WHERE seq = {seq}", "registered", 0),
        ("UPDATE audit_events SET outcome = 'success' WHERE seq = {seq}", "denied", 0),
        (
            "UPDATE audit_events SET timestamp = '2020-01-01T00:00:00Z' WHERE seq = {seq}",
            "denied",
            0,
        ),
        # A deleted event is missed by its successor, whose prev_hash no longer fits.
        ("DELETE FROM audit_events WHERE seq = {seq}", "registered", 1),
    ],
    ids=["detail", "agent", "outcome", "timestamp", "deletion"],
)
def test_an_edit_in_the_middle_is_named(
    broker: RunningBroker, history: str, tmp_path: Path, edit: str, target: str, named_after: int
) -> None:
    seq = {
        "registered": _seq(broker, "agent_registered", task_id="task-cover-up"),
        "denied": _seq(broker, "token_auth_failed"),
    }[target]
    database = _copy(broker, tmp_path)
    _tamper(database, edit.format(seq=seq))
    broken = _verify(database)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"evt-{seq + named_after:06d}" in broken.stdout + broken.stderr
