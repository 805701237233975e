"""``tasklease keys encrypt`` leaves no plaintext key behind: the default tenant's keys and
the audit log's, and every other tenant's (``<key_dir>/tenants/<name>`` and its ``log/``),
which the broker opens with the same provider."""

from __future__ import annotations

import os
from pathlib import Path

from keystore_support import PASSPHRASE, key_files
from typer.testing import CliRunner

from tasklease.cli.main import app
from tasklease.core.keys import load_or_create_keyring
from tasklease.core.tenants import tenant_key_dir
from tasklease.core.transparency import LOG_KEY_DIR
from tasklease.keystore import EncryptedFileKeyProvider, PlaintextKeyProvider

ENCRYPTED_HEADER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"


def _encrypt(data: Path) -> str:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    env["TASKLEASE_KEY_PASSPHRASE"] = PASSPHRASE
    done = CliRunner().invoke(app, ["keys", "encrypt", "--data-dir", str(data)], env=env)
    assert done.exit_code == 0, done.output
    return " ".join(done.output.split())


# Would fail if: keys encrypt re-wrote only <key_dir> and <key_dir>/log, leaving each
# tenant's signing key and audit log key in plaintext on disk.
def test_keys_encrypt_encrypts_every_tenants_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    key_dir = data / "keys"
    plaintext = PlaintextKeyProvider()
    directories = [key_dir, key_dir / LOG_KEY_DIR]
    for name in ("acme", "globex"):
        tenant = Path(tenant_key_dir(str(key_dir), name))
        directories += [tenant, tenant / LOG_KEY_DIR]
    kids = {d: load_or_create_keyring(d, plaintext).active_kid for d in directories}

    said = _encrypt(data)
    assert f"Encrypted {len(directories)} signing key(s)" in said
    assert "2 tenant(s)" in said
    encrypted = EncryptedFileKeyProvider(PASSPHRASE.encode())
    for directory in directories:
        (path,) = key_files(directory)
        assert path.read_bytes().startswith(ENCRYPTED_HEADER), path
        assert load_or_create_keyring(directory, encrypted).active_kid == kids[directory]

    again = _encrypt(data)
    assert "already encrypted" in again
