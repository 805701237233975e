# Would fail if: a revocation committed by one process did not wake the others' sockets,
# a commit without a revocation woke them, a socket left by a dead process stayed, or a
# wake-up directory others can enter (or another user owns) were used.
"""SQLite's wake-up datagrams between processes on one file (storage._wake): sent once a
revocation commits, to every other process's socket in a 0700 directory of our own."""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from pathlib import Path

import pytest

from tasklease.core.store import RevocationRecord
from tasklease.storage import SQLiteStore

NOW = time.time()


def _readable(sock: object, timeout: float = 0.0) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _revoke(store: SQLiteStore, target: str) -> None:
    with store.write() as tx:
        tx.insert_revocation(RevocationRecord("agent", target, int(NOW), NOW + 60))


def test_a_committed_revocation_wakes_the_other_processes_sockets(tmp_path: Path) -> None:
    db = tmp_path / "tasklease.db"
    writer, reader = SQLiteStore(db), SQLiteStore(db)  # two processes, as far as files go
    try:
        theirs = reader.open_revocation_wake()
        ours = writer.open_revocation_wake()
        assert theirs is not None and ours is not None
        wake_dir = Path(f"{db}.wake")
        assert wake_dir.stat().st_mode & 0o777 == 0o700
        assert sorted(os.listdir(wake_dir)) == sorted([theirs.name, ours.name])

        with writer.write() as tx:  # no revocation: nobody is woken
            assert tx.consume_nonce("n-1", NOW + 30)
        assert not _readable(theirs)

        _revoke(writer, "a")
        assert _readable(theirs, 2.0)
        assert not _readable(ours)  # a process is not woken by its own commits
        assert theirs.drain() == 1
        assert not _readable(theirs)
        # What the woken process then reads is the durable row, never the datagram.
        assert [r.target for r in reader.revocations_since(0)] == ["a"]

        # Extending a revocation (a later expiry) wakes them too: it gets a new seq.
        with writer.write() as tx:
            tx.insert_revocation(RevocationRecord("agent", "a", int(NOW), NOW + 120))
        assert _readable(theirs, 2.0)
        theirs.drain()

        # A forged datagram only wakes: drain reads and drops whatever it carries.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as forger:
            forger.sendto(b'{"revoke": "everything"}', str(wake_dir / theirs.name))
        assert _readable(theirs, 2.0)
        assert theirs.drain() == 1
        assert [r.target for r in reader.revocations_since(0)] == ["a"]

        theirs.close()
        assert os.listdir(wake_dir) == [ours.name]
    finally:
        writer.close()
        reader.close()


def test_a_socket_left_by_a_dead_process_is_removed(tmp_path: Path) -> None:
    db = tmp_path / "tasklease.db"
    writer = SQLiteStore(db)
    try:
        wake = writer.open_revocation_wake()
        assert wake is not None
        stale = Path(f"{db}.wake") / "999999-deadbeef"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(stale))
        dead.close()  # the file stays, nobody is bound to it
        assert stale.exists()
        other = SQLiteStore(db)
        try:
            _revoke(other, "b")
        finally:
            other.close()
        assert not stale.exists()
        assert _readable(wake, 2.0)
    finally:
        writer.close()
    assert os.listdir(Path(f"{db}.wake")) == []  # closing the store removes its socket


@pytest.mark.parametrize("problem", ["group-readable", "other-owner"])
def test_an_unsafe_wake_directory_is_not_used_and_said_once(
    tmp_path: Path, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "tasklease.db"
    wake_dir = Path(f"{db}.wake")
    wake_dir.mkdir(mode=0o700)
    if problem == "group-readable":
        wake_dir.chmod(0o750)
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        os.chown(wake_dir, 65534, 65534)
    store = SQLiteStore(db)
    try:
        with caplog.at_level(logging.WARNING, logger="tasklease.storage.wake"):
            assert store.open_revocation_wake() is None
            assert store.open_revocation_wake() is None
            _revoke(store, "c")  # commits; nobody to wake, and no error
            _revoke(store, "d")
        warnings = [r for r in caplog.records if "wake-ups unavailable" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
        assert os.listdir(wake_dir) == []
        assert [r.target for r in store.revocations_since(0)] == ["c", "d"]
    finally:
        store.close()


def test_without_a_listener_a_commit_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "tasklease.db"
    store = SQLiteStore(db)
    try:
        _revoke(store, "e")
    finally:
        store.close()
    assert not Path(f"{db}.wake").exists()
