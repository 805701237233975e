"""Directories the key store makes on the way to a key directory (``<key_dir>/tenants``
for a tenant's keys) are as private as the key directory, whatever the umask: a
directory that others may write lets them rename a tenant's key directory away, or put
a link to another key directory of the broker's user in its place."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tasklease.core.keys import load_or_create_keyring
from tasklease.keystore import PlaintextKeyProvider


def test_parents_made_for_a_key_directory_are_0700_under_a_loose_umask(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    previous = os.umask(0o002)  # user-private-group systems' usual umask
    try:
        load_or_create_keyring(keys, PlaintextKeyProvider())
        load_or_create_keyring(keys / "tenants" / "acme", PlaintextKeyProvider())
    finally:
        os.umask(previous)
    for directory in (keys, keys / "tenants", keys / "tenants" / "acme"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
