# Would fail if: the retired kids a key directory keeps were read from a file others may
# write, or from one holding something else than kids, or written other than 0600.
"""The retired kids a key directory keeps (``retired-signing-keys``, decision on restores
under stopped processes): added to, never lowered, read as carefully as the keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tasklease.core.keys import jwk_thumbprint, load_or_create_keyring
from tasklease.keystore import KeyStoreError, PlaintextKeyProvider

PLAIN = PlaintextKeyProvider()


def test_kept_kids_are_added_to_and_private(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, PLAIN)
    kid = ring.active_kid
    other = jwk_thumbprint(bytes(32))
    assert PLAIN.retired_kids(keys) == frozenset()
    PLAIN.keep_retired(keys, [kid, "not a kid", "x" * 44])  # only kids are kept
    PLAIN.keep_retired(keys, [other])
    PLAIN.keep_retired(keys, [kid])  # kept already: nothing written
    assert PLAIN.retired_kids(keys) == frozenset({kid, other})
    path = keys / "retired-signing-keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_keyring(keys, PLAIN).kids() == [kid]  # not a key file


def test_an_unsafe_or_foreign_file_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, PLAIN)
    path = keys / "retired-signing-keys"
    path.write_text("not-a-kid\n")
    path.chmod(0o600)
    with pytest.raises(KeyStoreError, match="not a key's kid"):
        PLAIN.retired_kids(keys)
    path.write_text(jwk_thumbprint(bytes(32)) + "\n")
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="accessible by group or others"):
        PLAIN.retired_kids(keys)
    path.unlink()
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(KeyStoreError, match="symlink"):
        PLAIN.retired_kids(keys)
