# Would fail if: a witness kept its key and its last cosigned checkpoints in a directory
# that another user may write or owns, where that user can put an empty state directory in
# place of the real one and so make the witness cosign a rewritten log (a fork).
"""A witness's directory holds its memory of every log it witnesses: the last checkpoint
it cosigned, against which it refuses a fork. Whoever may rename entries in it can make
the witness forget, and the witness then cosigns a rewritten log as if it had never seen
the first. ``witness init`` and ``witness serve`` refuse such a directory, as the key
store refuses a key directory (docs/configuration.md)."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing
import pytest
import typer

from tasklease.cli._witness import KEY_FILE, Witness, witness_init
from tasklease.rules.merkle import CompactRange, leaf_hash
from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    Checkpoint,
    Note,
    VerifierKey,
    checkpoint_note,
    private_key_text,
)
from tasklease.rules.witness import format_request

ORIGIN = "broker.example/audit"
LOG = nacl.signing.SigningKey.generate()
LOG_KEY = VerifierKey(ORIGIN, ED25519, bytes(LOG.verify_key))


def _signed(leaves: list[bytes]) -> Note:
    compact = CompactRange()
    compact.extend(leaves)
    checkpoint = Checkpoint(ORIGIN, len(leaves), compact.root())
    return checkpoint_note(
        checkpoint, bytes(LOG.verify_key), lambda m: bytes(LOG.sign(m).signature)
    )


def _key_file(directory: Path) -> None:
    text = private_key_text("witness.example", COSIGNATURE, os.urandom(32))
    fd = os.open(directory / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def _shared_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "witness"
    directory.mkdir()
    directory.chmod(0o777)  # a shared directory (or one made by `mkdir -p` under umask 000)
    return directory


def test_a_witness_refuses_a_directory_others_may_write(tmp_path: Path) -> None:
    directory = _shared_directory(tmp_path)
    _key_file(directory)
    with pytest.raises(typer.Exit):
        witness = Witness(directory, [LOG_KEY])
        # Unfixed: the attack goes through. The witness cosigns the log at 10 leaves...
        leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(20)]
        first = witness.handle(format_request(0, [], _signed(leaves[:10])))
        assert first[0] == 200
        # ...another user renames its state away and leaves an empty one in its place...
        (directory / "state").rename(directory / "kept")
        (directory / "state").mkdir()
        # ...and the witness cosigns a log whose leaf 5 was rewritten: a fork.
        rewritten = [*leaves[:5], leaf_hash(b"rewritten"), *leaves[6:]]
        forked = witness.handle(format_request(0, [], _signed(rewritten)))
        pytest.fail(f"the witness served from a shared directory and answered {forked[0]}")


def test_witness_init_refuses_an_existing_directory_others_may_write(tmp_path: Path) -> None:
    directory = _shared_directory(tmp_path)
    with pytest.raises(typer.Exit):
        witness_init(directory, name="witness.example")
    assert not (directory / KEY_FILE).exists()


def test_a_state_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "witness"
    directory.mkdir(mode=0o700)
    _key_file(directory)
    (directory / "state").mkdir()
    (directory / "state").chmod(0o777)
    with pytest.raises(typer.Exit):
        Witness(directory, [LOG_KEY])


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "witness"
    directory.mkdir(mode=0o700)
    _key_file(directory)
    os.chown(directory, 65534, 65534)
    with pytest.raises(typer.Exit):
        Witness(directory, [LOG_KEY])


def test_a_private_directory_serves_and_keeps_its_state(tmp_path: Path) -> None:
    directory = tmp_path / "witness"
    directory.mkdir(mode=0o700)
    _key_file(directory)
    witness = Witness(directory, [LOG_KEY])
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(10)]
    assert witness.handle(format_request(0, [], _signed(leaves)))[0] == 200
    assert witness.state(ORIGIN).size == 10
