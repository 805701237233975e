# Would fail if: a checkpoint became final without both witnesses' cosignatures, an
# outsider could not prove a revocation event from a saved checkpoint alone, a witness
# cosigned a log whose tail was rewritten and regrown, or a client holding an older
# checkpoint did not see the fork.
"""The transparent audit log end to end: a broker on loopback with two witnesses run by
``tasklease audit witness`` (real processes, real HTTP), a quorum of 2, an outsider who
proves an event with ``tasklease.verify`` from a saved checkpoint, and a rewritten tail
that both witnesses refuse and a client holding an older checkpoint detects."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cli_forks
import pytest
from e2e_support import free_port

from tasklease.client import NotFound
from tasklease.client.testing import BrokerForTests
from tasklease.rules.note import parse_note
from tasklease.verify import verify_checkpoint, verify_proof_bundle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCOPE = ["read:tickets:*"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    full.update({"COLUMNS": "300", **(env or {})})
    return cli_forks.run(args, env=full, timeout=60)  # forked from one that made the imports


def eventually(check: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class RunningWitness:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        made = cli("audit", "witness", "init", str(directory), "--name", name)
        assert made.returncode == 0, made.stderr
        self.vkey = made.stdout.strip()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = directory / "witness.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def serve(self, log_key: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tasklease.cli.main", "audit", "witness", "serve",
                 str(self.directory), "--log", log_key, "--listen", f"127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, env={**env, "COLUMNS": "300"},
            )  # fmt: skip
        eventually(lambda: "listening on" in self.text(), "the witness to listen")

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def state(self) -> dict[str, Any]:
        (state,) = (self.directory / "state").glob("*.json")
        data: dict[str, Any] = json.loads(state.read_text())
        return data

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[RunningWitness]]:
    made = [RunningWitness(tmp_path / f"w{i}", f"witness-{i}.example") for i in (1, 2)]
    yield made
    for witness in made:
        witness.stop()


def final_checkpoint(broker: BrokerForTests, at_least: int) -> str:
    admin = broker.admin()

    def ready() -> str | None:
        try:
            note = admin.audit_checkpoint()
        except NotFound:
            return None
        size = int(note.split("\n")[1])
        return note if size >= at_least else None

    result: str = eventually(ready, f"a final checkpoint of at least {at_least} events")
    return result


def activity(broker: BrokerForTests, task: str) -> None:
    """A registration and its revocation (four events)."""
    with broker.agent(SCOPE, task_id=task) as agent:
        broker.admin().revoke("agent", agent.agent_id)


def test_witnessed_log_proves_events_and_refuses_a_rewritten_tail(
    tmp_path: Path, witnesses: list[RunningWitness]
) -> None:
    data_dir = tmp_path / "broker"
    settings = {
        "audit_witnesses": tuple(f"{w.url} {w.vkey}" for w in witnesses),
        "audit_witness_quorum": 2,
        "audit_checkpoint_interval": 0.2,
    }
    with BrokerForTests(data_dir=data_dir, **settings) as broker:
        admin = broker.admin()
        (log_key,) = admin.audit_log_keys()["keys"]
        for witness in witnesses:
            witness.serve(log_key)
        activity(broker, "task-before")
        head = admin.audit_total()
        note = final_checkpoint(broker, head)
        # Final means cosigned by both witnesses (quorum 2), each from its own key.
        verify_checkpoint(note, [log_key], witnesses=[w.vkey for w in witnesses], quorum=2)

        # The operator saves the checkpoint and proves the revocation to an outsider.
        env = {"TASKLEASE_URL": broker.url, "TASKLEASE_ADMIN_SECRET": broker.admin_secret}
        saved = cli("audit", "checkpoint", "-o", str(tmp_path / "held.txt"),
                    "--log-key", log_key, env=env)  # fmt: skip
        assert saved.returncode == 0, saved.stderr
        revoked = [e for e in admin.iter_audit_events(event_type="token_revoked")]
        assert revoked
        proved = cli("audit", "prove", revoked[-1]["id"], "--log-key", log_key,
                     "-o", str(tmp_path / "bundle.json"), env=env)  # fmt: skip
        assert proved.returncode == 0, proved.stderr
        assert "PROVED" in proved.stdout
        # The outsider: only the bundle, the log's vkey and the witnesses' vkeys.
        bundle = json.loads((tmp_path / "bundle.json").read_text())
        checkpoint, index = verify_proof_bundle(
            bundle, [log_key], witnesses=[w.vkey for w in witnesses], quorum=2
        )
        assert bundle["event"]["event_type"] == "token_revoked"
        assert index == bundle["event"]["index"] and checkpoint.size >= index + 1
        offline = cli("audit", "prove", "--bundle", str(tmp_path / "bundle.json"),
                      "--log-key", log_key)  # fmt: skip
        assert offline.returncode == 0 and "PROVED" in offline.stdout, offline.stderr
        # An altered event does not verify.
        bundle["event"]["outcome"] = "denied"
        (tmp_path / "forged.json").write_text(json.dumps(bundle))
        forged = cli("audit", "prove", "--bundle", str(tmp_path / "forged.json"),
                     "--log-key", log_key)  # fmt: skip
        assert forged.returncode == 1 and "altered" in forged.stderr

        # The log grows; the held checkpoint is consistent with the new one.
        activity(broker, "task-after")
        final_checkpoint(broker, admin.audit_total())
        grown = cli("audit", "verify", "--url", broker.url, "--checkpoint",
                    str(tmp_path / "held.txt"), "--log-key", log_key, env=env)  # fmt: skip
        assert grown.returncode == 0, grown.stderr
        assert "CONSISTENT" in grown.stdout
        held_size = int((tmp_path / "held.txt").read_text().split("\n")[1])
        cosigned = [w.state()["size"] for w in witnesses]
        assert min(cosigned) > held_size

    # What the witnesses hold once that broker has stopped (its checkpoint job may have
    # pushed a later checkpoint after the one above, before it stopped).
    cosigned = [w.state()["size"] for w in witnesses]

    # Someone with the database rewrites the tail from before the held checkpoint's end
    # and lets the log grow again: a consistent chain, a consistent tree, another history.
    database = data_dir / "tasklease.db"
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("DELETE FROM audit_events WHERE seq > ?", (held_size - 3,))
        for table in ("audit_tiles", "audit_tree", "audit_checkpoints", "leases"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - constant table names
    conn.close()
    with BrokerForTests(data_dir=data_dir, **settings) as broker:
        for _ in range(3):
            activity(broker, "task-rewritten")
        for witness in witnesses:
            eventually(lambda w=witness: "REFUSED" in w.text(), "the witness to refuse")
            assert "not consistent" in witness.text()
            assert witness.state()["size"] in cosigned  # its state did not move
        with pytest.raises(NotFound):  # no checkpoint of the rewritten log is final
            broker.admin().audit_checkpoint()
        signed = parse_note(broker.broker.transparency.checkpoint("signed").note)  # type: ignore[union-attr]
        assert int(signed.text.split("\n")[1]) > held_size
    # The client holding the older checkpoint sees the fork in the database...
    forked = cli("audit", "verify", "--database", str(database), "--checkpoint",
                 str(tmp_path / "held.txt"), "--log-key", log_key)  # fmt: skip
    assert forked.returncode == 1, forked.stdout + forked.stderr
    assert "FORK" in forked.stderr
    # ...and from the broker itself, once it publishes without witnesses (quorum 0): the
    # log key signs the rewritten tree, and a consistency proof cannot link the two.
    with BrokerForTests(data_dir=data_dir, **{**settings, "audit_witness_quorum": 0}) as broker:
        activity(broker, "task-unwitnessed")
        final_checkpoint(broker, held_size + 1)
        env = {"TASKLEASE_URL": broker.url, "TASKLEASE_ADMIN_SECRET": broker.admin_secret}
        online = cli("audit", "verify", "--url", broker.url, "--checkpoint",
                     str(tmp_path / "held.txt"), "--log-key", log_key, env=env)  # fmt: skip
        assert online.returncode == 1, online.stdout + online.stderr
        assert "FORK" in online.stderr
