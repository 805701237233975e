# Would fail if: `tasklease audit verify --url --checkpoint` took the broker's checkpoint
# for the latest of the log named in the one the user holds when it is of another log
# (its origin), even with keys trusted for both logs.
"""`tasklease audit verify --url ... --checkpoint held.txt` against a real broker, with a
held checkpoint of another log: refused for what it is, not judged as a fork."""

from __future__ import annotations

from pathlib import Path

import nacl.signing
from tests.cli.test_cli import run

from tasklease.client.testing import BrokerForTests
from tasklease.rules.merkle import leaf_hash
from tasklease.rules.note import ED25519, Checkpoint, VerifierKey, checkpoint_note


def test_a_held_checkpoint_of_another_log_is_refused_by_its_origin(tmp_path: Path) -> None:
    elsewhere = "elsewhere.example/audit"
    key = nacl.signing.SigningKey(bytes(range(32)))
    note = checkpoint_note(
        Checkpoint(elsewhere, 1, leaf_hash(b"an event of another log")),
        bytes(key.verify_key),
        lambda message: bytes(key.sign(message).signature),
    )
    held = tmp_path / "held.txt"
    held.write_text(str(note))
    with BrokerForTests(audit_witness_quorum=0) as broker:
        assert broker.broker is not None
        transparency = broker.broker.transparency
        assert transparency.sign_if_due(force=True) is not None
        theirs = transparency.log_keys()[0].vkey
        mine = VerifierKey(elsewhere, ED25519, bytes(key.verify_key)).vkey
        keys = ["--log-key", mine, "--log-key", theirs]
        done = run(
            "audit", "verify", "--url", broker.url, "--checkpoint", str(held), *keys,
            broker=broker, home=tmp_path,
        )  # fmt: skip
    said = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAILED: checkpoint of tasklease/audit, not of {elsewhere}" in said
    assert "FORK" not in said and "CONSISTENT" not in done.stdout
    assert held.read_text() == str(note)  # nothing replaced it
