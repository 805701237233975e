# Would fail if: `tasklease audit checkpoint`, `audit prove` or `audit verify --url` had no
# way to hold the broker's checkpoint to the witnesses' cosignatures, so that a broker
# showing an auditor a history it never showed the witnesses (a split view: another tree
# of the same size, signed by the log key) was taken for the log.
"""An auditor pins the witnesses (``--witness``, ``--quorum``) and the CLI refuses a
checkpoint they did not cosign, against a real broker whose operator signs a fork."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nacl.signing
import pytest
from tests.cli.test_cli import run

from tasklease.client.testing import BrokerForTests
from tasklease.core.auditformat import AuditEntry
from tasklease.core.records import CheckpointRecord
from tasklease.core.store import WriteTx
from tasklease.rules.merkle import leaf_hash
from tasklease.rules.note import (
    COSIGNATURE,
    Checkpoint,
    Note,
    VerifierKey,
    checkpoint_note,
    cosign,
    parse_checkpoint,
    parse_note,
)

WITNESS = nacl.signing.SigningKey(bytes(range(32)))
WITNESS_KEY = VerifierKey("witness.example", COSIGNATURE, bytes(WITNESS.verify_key))
OTHER = nacl.signing.SigningKey(bytes(range(1, 33)))
OTHER_KEY = VerifierKey("other.example", COSIGNATURE, bytes(OTHER.verify_key))


def _cosigned(note: Note, signing: nacl.signing.SigningKey, key: VerifierKey) -> Note:
    line = cosign(
        note.text,
        key.name,
        key.public_key,
        int(time.time()),
        lambda message: bytes(signing.sign(message).signature),
    )
    return note.with_signatures([line])


def _serve(broker: BrokerForTests, note: Note) -> None:
    """The broker's final checkpoint is now ``note`` (the operator holds the log key)."""
    assert broker.broker is not None
    size = parse_checkpoint(note.text).size

    def unit(tx: WriteTx) -> list[AuditEntry]:
        assert tx.put_checkpoint(CheckpointRecord("final", size, str(note), 0.0))
        return []

    broker.broker.kernel.commit(unit)


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A broker, its log key, the honest checkpoint (cosigned by the witness) and a fork
    of the same size the log key signed but no witness saw."""
    with BrokerForTests(audit_witness_quorum=0) as broker:
        assert broker.broker is not None
        log = broker.broker.transparency
        broker.admin().create_launch_token("worker", ["read:data:*"])  # events to prove
        record = log.sign_if_due(force=True)
        assert record is not None
        honest = _cosigned(parse_note(record.note), WITNESS, WITNESS_KEY)
        ring = log.ring
        fork = checkpoint_note(
            Checkpoint(log.origin, record.size, leaf_hash(b"a history only you are shown")),
            ring.public_key(ring.active_kid) or b"",
            ring.sign_detached,
        )
        yield broker, log.log_keys()[0].vkey, honest, fork, tmp_path_factory.mktemp("home")


def test_the_fork_is_what_an_auditor_without_witnesses_accepts(forked) -> None:  # type: ignore[no-untyped-def]
    broker, vkey, _honest, fork, home = forked
    _serve(broker, fork)
    done = run("audit", "checkpoint", "--log-key", vkey, broker=broker, home=home)
    assert done.returncode == 0, done.stderr  # signed by the log key: all it can check


def test_a_checkpoint_the_witnesses_did_not_cosign_is_refused(forked) -> None:  # type: ignore[no-untyped-def]
    broker, vkey, honest, fork, home = forked
    pinned = ["--log-key", vkey, "--witness", WITNESS_KEY.vkey]
    _serve(broker, honest)
    done = run("audit", "checkpoint", *pinned, broker=broker, home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == str(honest)
    done = run("audit", "prove", "evt-000001", *pinned, broker=broker, home=home)
    assert done.returncode == 0, done.stderr
    assert "PROVED" in done.stdout

    _serve(broker, fork)
    for args in (
        ("audit", "checkpoint", *pinned),
        ("audit", "prove", "evt-000001", *pinned),
        ("audit", "verify", "--url", broker.url, *pinned),
    ):
        done = run(*args, broker=broker, home=home)
        said = " ".join(done.stderr.split())
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "FAILED: checkpoint cosigned by 0 of the witnesses, 1 needed" in said, args
        assert "PROVED" not in done.stdout and "intact" not in done.stdout


def test_a_proof_bundle_is_held_to_the_witnesses_offline(forked) -> None:  # type: ignore[no-untyped-def]
    broker, vkey, honest, _fork, home = forked
    _serve(broker, honest)
    bundle = home / "proof.json"
    done = run("audit", "prove", "evt-000001", "--log-key", vkey, "-o", str(bundle),
               "--force", broker=broker, home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr
    pinned = ["--bundle", str(bundle), "--log-key", vkey, "--witness", WITNESS_KEY.vkey]
    done = run("audit", "prove", *pinned, home=home)
    assert done.returncode == 0 and "PROVED" in done.stdout, done.stderr
    # The same event and proof under the log's checkpoint without the witness's line.
    data = json.loads(bundle.read_text())
    data["checkpoint"] = str(Note(honest.text, honest.signatures[:1]))
    bundle.write_text(json.dumps(data))
    done = run("audit", "prove", "--bundle", str(bundle), "--log-key", vkey, home=home)
    assert done.returncode == 0, done.stderr  # the log's signature alone: proved
    done = run("audit", "prove", *pinned, home=home)
    assert done.returncode == 1 and "cosigned by 0 of the witnesses" in done.stderr


def test_a_quorum_counts_each_witness_key_once(forked) -> None:  # type: ignore[no-untyped-def]
    broker, vkey, honest, _fork, home = forked
    _serve(broker, honest)  # cosigned by one witness of the two pinned
    both = ["--log-key", vkey, "--witness", WITNESS_KEY.vkey, "--witness", OTHER_KEY.vkey]
    done = run("audit", "checkpoint", *both, broker=broker, home=home)
    assert done.returncode == 1 and "cosigned by 1 of the witnesses, 2 needed" in done.stderr
    done = run("audit", "checkpoint", *both, "--quorum", "1", broker=broker, home=home)
    assert done.returncode == 0, done.stderr
    # The same key under another name is not a second witness.
    again = VerifierKey("alias.example", COSIGNATURE, WITNESS_KEY.public_key).vkey
    twice = ["--log-key", vkey, "--witness", WITNESS_KEY.vkey, "--witness", again]
    done = run("audit", "checkpoint", *twice, "--quorum", "2", broker=broker, home=home)
    assert done.returncode == 2 and "more than the 1 distinct --witness keys" in done.stderr


def test_a_witness_option_that_cannot_be_met_is_a_usage_error(tmp_path: Path) -> None:
    cases = [
        (["--witness", "log.example+12345678+AAAA"], "is not a witness verifier key"),
        (["--quorum", "1"], "--quorum counts the --witness keys"),
    ]
    for extra, message in cases:
        done = run("audit", "checkpoint", "--url", "http://127.0.0.1:9", *extra, home=tmp_path)
        assert done.returncode == 2 and message in " ".join(done.stderr.split()), done.stderr
    # A note-signing key (type 0x01) is no witness's key.
    note_key = VerifierKey("log.example", 0x01, bytes(WITNESS.verify_key)).vkey
    done = run("audit", "checkpoint", "--witness", note_key, home=tmp_path)
    assert done.returncode == 2 and "a witness cosigns with a type 0x04 key" in done.stderr
    # Offline, the witnesses vouch for a checkpoint kept: without one there is none.
    done = run("audit", "verify", "--database", str(tmp_path / "x.db"),
               "--witness", WITNESS_KEY.vkey, home=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "--witness checks a checkpoint" in done.stderr
