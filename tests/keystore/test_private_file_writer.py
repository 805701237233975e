"""``keystore.private_file_writer``: the one way tasklease writes a file only its user may
read (secrets, sessions, audit exports). It appears whole or not at all, 0600 whatever the
umask, never through a link, never over a file unless asked to replace it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tasklease.keystore import private_file_writer, write_private_file


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_new_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    old = os.umask(0)
    try:
        with private_file_writer(target, make_directory=False) as fh:
            fh.write(b"one\n")
            fh.write(b"two\n")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _leftovers(tmp_path) == []


def test_an_existing_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    target = tmp_path / "kept"
    target.write_bytes(b"kept")
    ran = []
    with pytest.raises(FileExistsError), private_file_writer(target) as fh:
        ran.append(fh)
    assert ran == [] and target.read_bytes() == b"kept" and _leftovers(tmp_path) == []


def test_replace_puts_a_new_file_in_place_of_the_old_or_of_a_link(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_bytes(b"old")
    old.chmod(0o644)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "link"
    link.symlink_to(victim)
    for target in (old, link):
        write_private_file(target, b"new", replace=True)
        assert not target.is_symlink() and target.read_bytes() == b"new"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert victim.read_bytes() == b"precious"


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "partial"
    with pytest.raises(RuntimeError), private_file_writer(target) as fh:
        fh.write(b"half")
        raise RuntimeError("the export broke off")
    assert not target.exists() and _leftovers(tmp_path) == []


def test_a_missing_directory_is_an_error_unless_it_may_be_made(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotFoundError),
        private_file_writer(tmp_path / "no" / "such" / "file", make_directory=False),
    ):
        pass
    assert not (tmp_path / "no").exists()
    write_private_file(tmp_path / "made" / "file", b"x")
    assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o700
