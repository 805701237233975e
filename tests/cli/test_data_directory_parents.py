# Would fail if: `tasklease init` (or a broker, or a SQLite store, making the directory of
# its database) left a directory it made on the way to the data directory as open as the
# umask allows, so that another local user could rename the data directory away or put a
# link to an older copy of it in its place.
"""Directories made on the way to a data directory (``init --data-dir /srv/tl/data`` makes
``/srv/tl``) are 0700 like the data directory, whatever the umask. Under umask 000 they
came out 0777: any local user could rename ``data`` away (the broker stops, and its
writes fail meanwhile) or put in its place a link to an older copy of it the broker's
user keeps (every revocation since forgotten), and neither ``serve`` nor ``doctor``
looks above the data directory. Decision 273 made the key store's parents 0700; this is
the same rule for the rest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cli_forks

from tasklease.storage.sqlite import SQLiteStore


def _modes(top: Path, below: Path) -> dict[str, int]:
    found = {}
    path = below
    while path != top:
        found[str(path.relative_to(top))] = stat.S_IMODE(path.stat().st_mode)
        path = path.parent
    return found


def test_init_makes_the_parents_of_its_data_directory_0700_under_umask_000(
    tmp_path: Path,
) -> None:
    data = tmp_path / "srv" / "tl" / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    made = cli_forks.run(
        ["init", "--data-dir", str(data), "--secret-file", str(data / "admin-secret")],
        env=env,
        timeout=60,
        umask=0o000,
    )
    assert made.returncode == 0, made.stderr
    assert _modes(tmp_path, data) == {"srv": 0o700, "srv/tl": 0o700, "srv/tl/data": 0o700}


def test_a_store_makes_the_parents_of_its_database_0700_under_umask_000(tmp_path: Path) -> None:
    database = tmp_path / "a" / "b" / "tasklease.db"
    previous = os.umask(0o000)
    try:
        SQLiteStore(database).close()
    finally:
        os.umask(previous)
    assert _modes(tmp_path, database.parent) == {"a": 0o700, "a/b": 0o700}
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
