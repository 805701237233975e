# Would fail if: an event's hash stopped covering one of its fields (detail, outcome,
# agent_id, lineage...), verification stopped comparing each event's prev_hash with the
# hash of the event before it, the Merkle tree stopped being rebuilt from the events, or
# a database whose tail was cut, or rewritten and regrown, still matched a checkpoint
# signed before.
"""TM-28 — audit tampering: an insider or an intruder with the database edits an event
(hides a registration, turns a denial into a success), deletes one, reorders them, or
cuts the log and lets it grow again with another history, to cover a misuse.

The HTTP API has no way to change the log, and only operators read it. Each event's
SHA-256 hash covers all its fields, its lineage and its predecessor's hash, and the
events are the leaves of an RFC 9162 Merkle tree whose head the broker signs with a log
key of its own (a checkpoint). Anyone holding an earlier checkpoint (an auditor, a
witness) proves the log only grew: a rewrite that keeps the chain and the tree
self-consistent still does not extend the checkpoint (``tasklease audit verify
--checkpoint``). Every kind of rewrite below is caught against a checkpoint kept outside
the database; the edits in the middle are also named by the chain walk alone.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import RunningBroker
from threat_support import audit_events, bearer, refused

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry
from tasklease.core.clock import SystemClock
from tasklease.storage import SQLiteStore

pytestmark = pytest.mark.slow

# Checkpoints within a fifth of a second of the log growing.
BROKER_ENV = {"TASKLEASE_AUDIT_CHECKPOINT_INTERVAL": "0.2"}


@pytest.fixture(scope="module")
def history(broker: RunningBroker, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Some credential history, one denial in it, and the checkpoint an auditor kept
    outside the database once it covered all of it; returns its file and the log's key."""
    agent = broker.register(["read:tickets:1"], task_id="task-cover-up")
    broker.post("/v1/token/renew", headers=bearer("not-a-token"))
    broker.revoke("agent", agent.agent_id)
    broker.register(["read:tickets:2"])
    size = len(audit_events(broker))
    deadline = time.monotonic() + 20
    while True:
        answer = broker.get("/v1/audit/checkpoint", headers=broker.admin_headers())
        if answer.status_code == 200 and int(answer.text.split("\n")[1]) >= size:
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    keys = broker.get("/v1/audit/log-keys", headers=broker.admin_headers()).json()["keys"]
    held = tmp_path_factory.mktemp("auditor") / "checkpoint.txt"
    held.write_text(answer.text)
    return held, keys[0]


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


def _verify(database: Path, *more: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "audit", "verify", "--database",
         str(database), *more],
        capture_output=True, text=True, env={**env, "COLUMNS": "300"}, cwd=database.parent,
        timeout=60, check=False,
    )  # fmt: skip


def _against(history: tuple[Path, str]) -> tuple[str, ...]:
    held, key = history
    return ("--checkpoint", str(held), "--log-key", key)


def _seq(broker: RunningBroker, event_type: str, **match: str) -> int:
    for event in audit_events(broker, event_type=event_type):
        if all(event[k] == v for k, v in match.items()):
            return int(event["seq"])
    raise AssertionError(f"no {event_type} event")


def test_the_api_cannot_change_the_log_and_only_operators_read_it(
    broker: RunningBroker, history: tuple[Path, str]
) -> None:
    for path in ("/v1/audit/events", "/v1/audit/checkpoint", "/v1/audit/proof/inclusion"):
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            resp = broker.client.request(method, path, headers=broker.admin_headers())
            assert resp.status_code == 405, (method, path, resp.text)
    agent = broker.register(["read:tickets:3"])
    app_token = broker.app_token(broker.create_app(["read:tickets:*"]))
    for token in (agent.access_token, app_token):
        for path in ("/v1/audit/events", "/v1/audit/checkpoint", "/v1/audit/proof/inclusion"):
            refused(broker, broker.get(path, headers=bearer(token)), 403, "insufficient_scope")


def test_an_intact_copy_verifies_against_the_kept_checkpoint(
    broker: RunningBroker, history: tuple[Path, str], tmp_path: Path
) -> None:
    intact = _verify(_copy(broker, tmp_path), *_against(history))
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit chain intact" in intact.stdout and "CONSISTENT" in intact.stdout


@pytest.mark.parametrize(
    ("edit", "target", "named_after"),
    [
        ("UPDATE audit_events SET detail = 'nothing happened' WHERE seq = {seq}", "registered", 0),
        ("UPDATE audit_events SET agent_id = '' WHERE seq = {seq}", "registered", 0),
        ("UPDATE audit_events SET principal_ref = '' WHERE seq = {seq}", "registered", 0),
        ("UPDATE audit_events SET outcome = 'success' WHERE seq = {seq}", "denied", 0),
        (
            "UPDATE audit_events SET timestamp = '2020-01-01T00:00:00Z' WHERE seq = {seq}",
            "denied",
            0,
        ),
        # A deleted event is missed by its successor, whose prev_hash no longer fits.
        ("DELETE FROM audit_events WHERE seq = {seq}", "registered", 1),
    ],
    ids=["detail", "agent", "principal", "outcome", "timestamp", "deletion"],
)
def test_an_edit_in_the_middle_is_named(
    broker: RunningBroker,
    history: tuple[Path, str],
    tmp_path: Path,
    edit: str,
    target: str,
    named_after: int,
) -> None:
    seq = {
        "registered": _seq(broker, "agent_registered", task_id="task-cover-up"),
        "denied": _seq(broker, "token_auth_failed"),
    }[target]
    database = _copy(broker, tmp_path)
    _tamper(database, edit.format(seq=seq))
    broken = _verify(database, *_against(history))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"evt-{seq + named_after:06d}" in broken.stdout + broken.stderr


def test_a_reordering_is_named(
    broker: RunningBroker, history: tuple[Path, str], tmp_path: Path
) -> None:
    seq = _seq(broker, "agent_registered", task_id="task-cover-up")
    database = _copy(broker, tmp_path)
    _tamper(
        database,
        f"UPDATE audit_events SET seq = -1 WHERE seq = {seq}",
        f"UPDATE audit_events SET seq = {seq} WHERE seq = {seq + 1}",
        f"UPDATE audit_events SET seq = {seq + 1} WHERE seq = -1",
    )
    broken = _verify(database, *_against(history))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"evt-{seq:06d}" in broken.stderr


def _regrow(database: Path, keep: int, entries: int) -> None:
    """Cut the log after event ``keep`` and let it grow again with other events, with a
    valid chain and a tree rebuilt over them: all an insider with the code can do."""
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("DELETE FROM audit_events WHERE seq > ?", (keep,))
        conn.execute("DELETE FROM audit_tiles")
        conn.execute("DELETE FROM audit_tree")
    conn.close()
    store = SQLiteStore(database)
    try:
        log = AuditLog(store, SystemClock())
        log.record(*[AuditEntry("agent_registered", detail=f"benign {i}") for i in range(entries)])
        log.close()
    finally:
        store.close()


def test_a_cut_at_the_end_shows_against_the_checkpoint(
    broker: RunningBroker, history: tuple[Path, str], tmp_path: Path
) -> None:
    database = _copy(broker, tmp_path)
    _tamper(database, "DELETE FROM audit_events WHERE seq > 3")
    _tamper(database, "DELETE FROM audit_tiles", "DELETE FROM audit_tree")
    alone = _verify(database)  # the chain that is left is consistent in itself...
    assert alone.returncode == 0, alone.stdout + alone.stderr
    cut = _verify(database, *_against(history))  # ...but not the one the checkpoint signed
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "CUT" in cut.stderr


def test_a_rewritten_and_regrown_tail_shows_against_the_checkpoint(
    broker: RunningBroker, history: tuple[Path, str], tmp_path: Path
) -> None:
    held_size = int(history[0].read_text().split("\n")[1])
    database = _copy(broker, tmp_path)
    _regrow(database, keep=held_size - 2, entries=10)
    alone = _verify(database)
    assert alone.returncode == 0, alone.stdout + alone.stderr  # chain and tree agree
    assert "Merkle tree" in alone.stdout
    forked = _verify(database, *_against(history))
    assert forked.returncode == 1, forked.stdout + forked.stderr
    assert "FORK" in forked.stderr
