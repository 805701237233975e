# Would fail if: the audit log's anchor were written with looser care than the keys beside
# it (a mode others can read or write, a half-written file, through a link), read from a
# file others could have written, or lowered by a process keeping an older checkpoint late.
"""``keystore.CheckpointFiles``: the last checkpoint a log key signed, one file per log in
the log key's directory (core.rollback)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from tasklease.keystore import CheckpointFiles, KeyStoreError
from tasklease.rules.note import Checkpoint, checkpoint_note

LOG = bytes(range(32))
KEY = nacl.signing.SigningKey(b"k" * 32)


def note(size: int) -> str:
    checkpoint = Checkpoint("example.org/audit", size, bytes([size]) * 32)
    sign = lambda message: bytes(KEY.sign(message).signature)  # noqa: E731
    return str(checkpoint_note(checkpoint, bytes(KEY.verify_key), sign))


def test_written_as_the_keys_are_and_read_back(tmp_path: Path) -> None:
    directory = tmp_path / "keys" / "log"
    files = CheckpointFiles()
    assert files.read(directory, LOG) is None
    files.advance(directory, LOG, note(3))
    path = files.path(directory, LOG)
    assert path.name == "checkpoint-" + LOG.hex()[:32] and files.where(directory, LOG) == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert files.read(directory, LOG) == note(3)
    assert [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []
    other = bytes(32)
    files.advance(directory, other, note(1))  # another log: a file of its own
    assert files.read(directory, LOG) == note(3) and files.read(directory, other) == note(1)


def test_advance_keeps_the_larger_and_replace_does_not(tmp_path: Path) -> None:
    files = CheckpointFiles()
    files.advance(tmp_path, LOG, note(5))
    files.advance(tmp_path, LOG, note(4))  # an older checkpoint, kept late
    assert files.read(tmp_path, LOG) == note(5)
    files.advance(tmp_path, LOG, note(6))
    assert files.read(tmp_path, LOG) == note(6)
    files.replace(tmp_path, LOG, note(2))  # an operator accepted a restore
    assert files.read(tmp_path, LOG) == note(2)
    with pytest.raises(ValueError, match="not a signed checkpoint"):
        files.advance(tmp_path, LOG, "not a note")
    files.path(tmp_path, LOG).write_text("garbage")  # unreadable as a checkpoint
    files.advance(tmp_path, LOG, note(1))
    assert files.read(tmp_path, LOG) == note(1)


# Would fail if: the anchors of other logs in a log key's directory were not listed (a
# database naming itself otherwise would find no anchor), were read with less care than
# the log's own, or were left in place when an operator accepts another log.
def test_other_logs_anchors_are_listed_and_set_aside_when_one_is_accepted(
    tmp_path: Path,
) -> None:
    files = CheckpointFiles()
    assert files.others(tmp_path / "missing", LOG) == []
    other = bytes(32)
    files.advance(tmp_path, LOG, note(3))
    assert files.others(tmp_path, LOG) == []
    files.advance(tmp_path, other, note(5))
    (tmp_path / "checkpoint-not-an-anchor.bak").write_text("whatever")
    assert files.others(tmp_path, LOG) == [(files.where(tmp_path, other), note(5))]
    assert files.others(tmp_path, other) == [(files.where(tmp_path, LOG), note(3))]
    files.path(tmp_path, other).chmod(0o644)
    with pytest.raises(KeyStoreError, match="accessible by group or others"):
        files.others(tmp_path, LOG)
    files.path(tmp_path, other).chmod(0o600)
    files.replace(tmp_path, LOG, note(1))  # an operator accepted this log
    assert files.read(tmp_path, LOG) == note(1) and files.others(tmp_path, LOG) == []
    retired = tmp_path / f"retired-{files.path(tmp_path, other).name}"
    assert retired.read_text() == note(5) and stat.S_IMODE(retired.stat().st_mode) == 0o600
    assert files.read(tmp_path, other) is None


def test_a_file_others_may_touch_or_a_link_is_refused(tmp_path: Path) -> None:
    files = CheckpointFiles()
    files.advance(tmp_path, LOG, note(1))
    path = files.path(tmp_path, LOG)
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="accessible by group or others"):
        files.read(tmp_path, LOG)
    path.chmod(0o600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(note(9))
    elsewhere.chmod(0o600)
    path.unlink()
    os.symlink(elsewhere, path)
    with pytest.raises(KeyStoreError, match="is a symlink"):
        files.read(tmp_path, LOG)
    files.replace(tmp_path, LOG, note(2))  # renamed over the link, never written through it
    assert not path.is_symlink() and elsewhere.read_text() == note(9)


def test_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir(mode=0o700)
    directory.chmod(0o777)
    with pytest.raises(KeyStoreError, match="writable by group or others"):
        CheckpointFiles().advance(directory, LOG, note(1))


# Would fail if: a key directory another user owns were used, as it was: its owner may
# delete the newest signing key (the rotated-away one becomes active again) or an anchor
# (a restored database goes unnoticed), whatever the directory's mode.
def test_a_directory_another_user_owns_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "log"
    directory.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(directory, 65534, 65534)  # nobody's
    else:
        monkeypatch.setattr(os, "geteuid", lambda: directory.stat().st_uid + 1)
    with pytest.raises(KeyStoreError, match=r"is owned by uid \d+, not by this user"):
        CheckpointFiles().advance(directory, LOG, note(1))
