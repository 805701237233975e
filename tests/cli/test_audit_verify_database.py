# Would fail if: `tasklease audit verify --database` refused a kept checkpoint of the
# empty log or of exactly the events it holds, or passed a database whose tree on
# record is not the tree of its events, whose chain is broken where the stored hashes
# still make the same tree, that holds fewer events than a kept checkpoint covers
# (reported as anything but a cut), or whose first events are not the ones a kept
# checkpoint covers.
"""`tasklease audit verify --database [--checkpoint ...]` offline, on a SQLite file written
in this process, against checkpoints signed here with a log key of the test's own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import nacl.signing
from tests.cli.test_cli import run

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import AuditEntry
from tasklease.core.clock import SystemClock
from tasklease.rules.auditchain import event_leaf
from tasklease.rules.merkle import leaf_hash, root_of
from tasklease.rules.note import ED25519, Checkpoint, VerifierKey, checkpoint_note
from tasklease.storage import SQLiteStore

ORIGIN = "verify.example/audit"
_KEY = nacl.signing.SigningKey(bytes(range(32)))
VKEY = VerifierKey(ORIGIN, ED25519, bytes(_KEY.verify_key)).vkey


def _log(path: Path, n: int = 6) -> list[bytes]:
    """A database of ``n`` events; their leaf hashes."""
    with SQLiteStore(path) as store:
        log = AuditLog(store, SystemClock())
        for i in range(n):
            log.record(AuditEntry("token_issued", detail=f"event {i}"))
        log.close()
        assert store.audit_tree() is not None
        return [event_leaf(e.hash) for e in store.iter_audit()]


def _checkpoint(path: Path, leaves: list[bytes]) -> Path:
    note = checkpoint_note(
        Checkpoint(ORIGIN, len(leaves), root_of(leaves)),
        bytes(_KEY.verify_key),
        lambda message: bytes(_KEY.sign(message).signature),
    )
    path.write_text(str(note))
    return path


def _verify(database: Path, home: Path, checkpoint: Path | None = None) -> tuple[int, str, str]:
    args = ["audit", "verify", "--database", str(database)]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint), "--log-key", VKEY]
    done = run(*args, home=home)
    return done.returncode, " ".join(done.stdout.split()), " ".join(done.stderr.split())


def test_a_checkpoint_the_database_extends_is_consistent(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    # The empty log's checkpoint, an older one, and one of the log exactly as it is.
    for size, after in ((0, 6), (4, 2), (6, 0)):
        held = _checkpoint(tmp_path / f"held-{size}.txt", leaves[:size])
        code, out, err = _verify(database, tmp_path, held)
        assert code == 0, out + err
        assert "audit chain intact: 6 events" in out and "Merkle tree of 6 leaves matches" in out
        assert (
            f"CONSISTENT: the database holds the {size} events of the checkpoint of {ORIGIN}, "
            f"unchanged, and {after} after them"
        ) in out


def test_a_database_shorter_than_the_checkpoint_is_a_cut(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    # The checkpoint of this log once it held two events more than the copy at hand.
    later = leaves + [leaf_hash(b"lost 1"), leaf_hash(b"lost 2")]
    code, out, err = _verify(database, tmp_path, _checkpoint(tmp_path / "held.txt", later))
    assert code == 1, out + err
    assert "CUT: the database holds 6 events, fewer than the 8 the checkpoint covers" in err
    assert "FORK" not in err and "CONSISTENT" not in out


def test_a_database_whose_first_events_differ_from_the_checkpoint_is_a_fork(
    tmp_path: Path,
) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    other = [*leaves[:3], leaf_hash(b"the event the log had then")]
    code, out, err = _verify(database, tmp_path, _checkpoint(tmp_path / "held.txt", other))
    assert code == 1, out + err
    assert "FORK: the database's first 4 events are not the ones the checkpoint covers" in err
    assert "CONSISTENT" not in out


def test_a_tree_on_record_that_is_not_the_events_tree_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    _log(database)
    assert _verify(database, tmp_path)[0] == 0
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("UPDATE audit_tree SET root = ?", (bytes(32),))
    conn.close()
    code, out, err = _verify(database, tmp_path)
    assert code == 1, out + err
    assert "audit tree broken: the tree on record (size 6) is not the tree" in err
    assert "audit chain intact" not in out


def test_a_broken_chain_is_refused_though_its_stored_hashes_make_the_tree(
    tmp_path: Path,
) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    held = _checkpoint(tmp_path / "held.txt", leaves)
    conn = sqlite3.connect(database)
    with conn:  # the event's text changes; its stored hash (the tree's leaf) does not
        conn.execute("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 3")
    conn.close()
    for checkpoint in (None, held):
        code, out, err = _verify(database, tmp_path, checkpoint)
        assert code == 1, out + err
        assert "audit chain broken" in err and "evt-000003" in err
        assert "audit chain intact" not in out and "CONSISTENT" not in out


# Would fail if: `audit verify --database` without --checkpoint ignored the signed
# checkpoint stored in the same database (a log whose events and tree on record were
# both rewritten passed), took one the log key did not sign, or did not say when the
# database holds no signed checkpoint at all.


def _store_checkpoint(database: Path, leaves: list[bytes], key: nacl.signing.SigningKey) -> None:
    from tasklease.core.records import CheckpointRecord

    note = checkpoint_note(
        Checkpoint(ORIGIN, len(leaves), root_of(leaves)),
        bytes(key.verify_key),
        lambda message: bytes(key.sign(message).signature),
    )
    with SQLiteStore(database) as store, store.write() as tx:
        tx.put_checkpoint(CheckpointRecord("final", len(leaves), str(note), 1.0))


def _verify_stored(database: Path, home: Path) -> tuple[int, str, str]:
    done = run("audit", "verify", "--database", str(database), "--log-key", VKEY, home=home)
    return done.returncode, " ".join(done.stdout.split()), " ".join(done.stderr.split())


def test_without_a_checkpoint_stored_it_says_so(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    _log(database)
    code, out, err = _verify_stored(database, tmp_path)
    assert code == 0, out + err
    assert "audit chain intact: 6 events" in out
    assert "no signed checkpoint found in the database" in err, err


def test_the_signed_checkpoint_in_the_database_holds_the_events(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    _store_checkpoint(database, leaves[:4], _KEY)
    code, out, err = _verify_stored(database, tmp_path)
    assert code == 0, out + err
    assert "the signed checkpoint of 4 events in the database matches" in out, out
    assert "no signed checkpoint found" not in err, err


def test_events_that_are_not_the_stored_checkpoints_are_refused(tmp_path: Path) -> None:
    # The log the key signed held other events: these, with a tree on record rebuilt from
    # them (as a writer who rewrote the events would leave it), are a rewrite.
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    signed = [leaf_hash(b"the first event as written"), *leaves[1:4]]
    _store_checkpoint(database, signed, _KEY)
    code, out, err = _verify_stored(database, tmp_path)
    assert code == 1, out + err
    assert "audit tree broken: the latest signed checkpoint in the database (size 4)" in err, err


def test_a_stored_checkpoint_the_log_key_did_not_sign_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    _store_checkpoint(database, leaves, nacl.signing.SigningKey.generate())
    code, out, err = _verify_stored(database, tmp_path)
    assert code == 1, out + err
    assert "checkpoint broken:" in err, err


def test_a_stored_checkpoint_without_a_key_to_check_it_is_said_unchecked(tmp_path: Path) -> None:
    database = tmp_path / "tasklease.db"
    leaves = _log(database)
    _store_checkpoint(database, leaves, _KEY)
    done = run("audit", "verify", "--database", str(database), home=tmp_path)
    err = " ".join(done.stderr.split())
    assert done.returncode == 0, done.stdout + err
    assert "the signed checkpoint in the database (size 6) was not checked" in err, err
