# Would fail if: `tasklease audit verify --url` walked only the hash chain the broker
# serves, without rebuilding the Merkle tree from its events and holding it to the
# broker's signed checkpoint (and to a checkpoint the user kept): a writer of the
# database who edits an event and chains the events after it again, leaving the tree,
# would pass as "intact" and "CONSISTENT".
"""`tasklease audit verify --url [--checkpoint]` against a real broker whose database was
rewritten behind its back: an event edited and the chain after it hashed again, the
tree and the checkpoints left as they were (they are signed: the writer cannot redo
them)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from tests.cli.test_cli import run

from tasklease.client.testing import BrokerForTests
from tasklease.core.auditformat import event_hash
from tasklease.storage import SQLiteStore

SCOPE = ["read:data:*"]


def _rechain_from(database: Path, seq: int, detail: str) -> None:
    """Edit event ``seq``'s detail and hash it and every event after it again."""
    with SQLiteStore(database) as store:
        events = list(store.iter_audit())
    prev = events[seq - 2].hash if seq > 1 else "0" * 64
    rows: list[tuple[str, str, str, int]] = []
    for event in events[seq - 1 :]:
        changed = dataclasses.replace(
            event, prev_hash=prev, detail=detail if event.seq == seq else event.detail
        )
        digest = event_hash(prev, changed.seq, changed.timestamp, changed)
        rows.append((changed.detail, prev, digest, changed.seq))
        prev = digest
    with sqlite3.connect(database) as conn:
        conn.executemany(
            "UPDATE audit_events SET detail = ?, prev_hash = ?, hash = ? "
            "WHERE seq = ? AND tenant_id = 'default'",
            rows,
        )
    conn.close()


def test_an_event_rewritten_and_chained_again_is_found_over_http(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with BrokerForTests(data_dir=data, audit_witness_quorum=0) as broker:
        with broker.agent(SCOPE, task_id="task-rewritten"):
            pass
        assert broker.broker is not None
        transparency = broker.broker.transparency
        log_key = transparency.log_keys()[0].vkey
        assert transparency.sign_if_due(force=True) is not None
        held = tmp_path / "held.txt"
        kept = run(
            "audit", "checkpoint", "--log-key", log_key, "--output", str(held),
            broker=broker, home=tmp_path,
        )  # fmt: skip
        assert kept.returncode == 0, kept.stdout + kept.stderr
        secret = broker.admin_secret
    database = data / "tasklease.db"
    _rechain_from(database, 3, "nothing to see")

    # The events no longer make the tree on record: the offline check says so...
    offline = run("audit", "verify", "--database", str(database), home=tmp_path)
    assert offline.returncode == 1, offline.stdout + offline.stderr
    assert "audit tree broken" in offline.stderr

    # ...and so does the online one, from the events the broker serves.
    with BrokerForTests(data_dir=data, admin_secret=secret, audit_witness_quorum=0) as again:
        chain = run("audit", "verify", "--url", again.url, broker=again, home=tmp_path)
        assert chain.returncode == 1, chain.stdout + chain.stderr
        assert "audit chain intact" not in chain.stdout
        assert "audit tree broken" in " ".join(chain.stderr.split())
        pinned = run(
            "audit", "verify", "--url", again.url, "--log-key", log_key,
            broker=again, home=tmp_path,
        )  # fmt: skip
        assert pinned.returncode == 1, pinned.stdout + pinned.stderr
        assert "audit tree broken" in " ".join(pinned.stderr.split())
        against = run(
            "audit", "verify", "--url", again.url, "--checkpoint", str(held),
            "--log-key", log_key, broker=again, home=tmp_path,
        )  # fmt: skip
    assert against.returncode == 1, against.stdout + against.stderr
    assert "CONSISTENT" not in against.stdout
    assert "FORK" in against.stderr


def test_an_untouched_log_still_verifies_over_http(tmp_path: Path) -> None:
    with BrokerForTests(audit_witness_quorum=0) as broker:
        with broker.agent(SCOPE, task_id="task-intact"):
            pass
        assert broker.broker is not None
        transparency = broker.broker.transparency
        log_key = transparency.log_keys()[0].vkey
        assert transparency.sign_if_due(force=True) is not None
        held = tmp_path / "held.txt"
        kept = run(
            "audit", "checkpoint", "--log-key", log_key, "--output", str(held),
            broker=broker, home=tmp_path,
        )  # fmt: skip
        assert kept.returncode == 0, kept.stdout + kept.stderr
        with broker.agent(SCOPE, task_id="task-later"):
            pass
        chain = run("audit", "verify", "--url", broker.url, broker=broker, home=tmp_path)
        assert chain.returncode == 0, chain.stdout + chain.stderr
        assert "audit chain intact" in chain.stdout
        against = run(
            "audit", "verify", "--url", broker.url, "--checkpoint", str(held),
            "--log-key", log_key, broker=broker, home=tmp_path,
        )  # fmt: skip
        assert against.returncode == 0, against.stdout + against.stderr
        assert "CONSISTENT" in against.stdout
