"""Local commands for the signing keys at rest: the key part of ``init``, and
``keys encrypt`` (plaintext keys re-written under the ``file`` provider's passphrase).

They work on a data directory, not through a broker: see docs/operations.md, Keys.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tasklease.cli._common import EXIT_USAGE, ConfigOpt, DataDirOpt, fail, out
from tasklease.cli._configfile import setting_line

if TYPE_CHECKING:
    from tasklease.core.config import Config

__all__ = ["KEY_PROVIDERS", "init_keys", "key_directories", "register"]

KEY_PROVIDERS = ("file", "pkcs11", "plaintext")

_DEFAULT_KEK_FILE = "key-passphrase"


def init_keys(config: Config, *, secret_file: str | None) -> tuple[list[str], bool]:
    """Set up the signing keys of the broker ``tasklease init`` makes; return its config
    lines for them, and whether a first key was made (False: the keys were there, for
    ``init --force``).

    ``config`` is what init works with: the environment and the options (and, with
    ``--force``, the config file it keeps), with an absolute ``data_dir``. With the
    ``file`` provider, no key yet and no passphrase given (neither
    ``TASKLEASE_KEY_PASSPHRASE`` nor a passphrase file), a random passphrase file (0600) is
    made beside the admin secret file, or in the data directory; a path other than the
    default (``<data_dir>/key-passphrase``) goes into the config, absolute. Keys that exist
    are opened with their own passphrase, never given a new one. Prints what it did and
    where the passphrase is; exits 2 when the keys cannot be set up.
    """
    from tasklease.core.keys import load_or_create_keyring
    from tasklease.keystore import (
        PASSPHRASE_ENV,
        PIN_ENV,
        KeyStoreError,
        create_passphrase_file,
        open_key_provider,
    )

    directory = Path(config.data_dir)
    key_dir = Path(config.key_dir)
    existing = key_dir.is_dir() and any(key_dir.glob("signing-*.pem"))
    lines = [setting_line("key_provider", config.key_provider)]
    created: Path | None = None
    if config.key_provider == "file" and not os.environ.get(PASSPHRASE_ENV):
        if config.key_passphrase_file:
            path = Path(config.key_passphrase_file)
        elif existing:
            path = directory / _DEFAULT_KEK_FILE  # keys that exist keep their passphrase
        else:
            beside = Path(secret_file).parent if secret_file else directory
            path = beside / _DEFAULT_KEK_FILE
            if not os.path.lexists(path):
                create_passphrase_file(path)
                created = path
        config = dataclasses.replace(config, key_passphrase_file=str(path))
        if path.absolute() == directory / _DEFAULT_KEK_FILE:
            # The default place, found from data_dir wherever the broker is started from.
            lines.append(f"# key_passphrase_file: {_DEFAULT_KEK_FILE} in the data directory")
        else:
            lines.append(setting_line("key_passphrase_file", path.absolute().as_posix()))
    elif config.key_provider == "pkcs11":
        lines += [
            setting_line(name, getattr(config, name))
            for name in ("pkcs11_module", "pkcs11_token_label", "pkcs11_key_label")
        ]
        if config.pkcs11_pin_file:
            pin_file = Path(config.pkcs11_pin_file).absolute().as_posix()
            lines.append(setting_line("pkcs11_pin_file", pin_file))
    try:
        provider = open_key_provider(config)
        ring = load_or_create_keyring(key_dir, provider)
    except (KeyStoreError, OSError) as exc:
        fail(f"cannot set up the signing keys: {exc}")
    made = "Signing key" if not existing else "Signing keys kept, active key"
    out.print(f"{made} {ring.active_kid}: {provider.describe(key_dir)}", highlight=False)
    if created is not None:
        out.print(
            f"Key passphrase (KEK) written to {created} (mode 0600): the signing keys cannot "
            "be read without it. Keep it out of the data directory's backups; you may move "
            f"it and update key_passphrase_file, or give it in {PASSPHRASE_ENV} instead.",
            highlight=False,
        )
    elif config.key_provider == "file" and os.environ.get(PASSPHRASE_ENV):
        out.print(f"Set {PASSPHRASE_ENV} for `tasklease serve` as well.", highlight=False)
    elif config.key_provider == "pkcs11" and not config.pkcs11_pin_file:
        out.print(f"Set {PIN_ENV} for `tasklease serve` as well.", highlight=False)
    elif config.key_provider == "plaintext":
        out.print(
            "The signing key is NOT encrypted (key_provider = plaintext): anyone who can "
            "read the key directory can sign tokens.",
            highlight=False,
        )
    return lines, not existing


def keys_encrypt(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Encrypt plaintext signing keys in place, for key_provider = "file".

    Every key of the data directory: the broker's, the audit log's, and each tenant's
    (<key-dir>/tenants/<name>, with its log key). Stop the broker first. The passphrase
    is TASKLEASE_KEY_PASSPHRASE, else key_passphrase_file, else a new random file
    <data-dir>/key-passphrase (0600). Each key keeps its file name and kid; tokens it
    signed stay valid. Then remove key_provider = "plaintext" from the configuration.
    """
    from tasklease.core.keydirs import TENANT_KEY_DIRS
    from tasklease.keystore import (
        EncryptedFileKeyProvider,
        KeyStoreError,
        encrypt_directory,
        open_key_provider,
    )
    from tasklease.settings import ConfigError, load_config

    try:
        cfg = load_config(config, overrides={"data_dir": data_dir})
    except ConfigError as exc:
        fail(str(exc))
    key_dir = Path(cfg.key_dir)
    if not key_dir.is_dir():
        fail(f"no key directory at {key_dir}")
    try:
        provider = open_key_provider(_as_file_provider(cfg), create_kek_file="yes")
        if not isinstance(provider, EncryptedFileKeyProvider):  # pragma: no cover
            fail("internal error: not the file key provider")
        kids: list[str] = []
        tenants = 0
        for directory in key_directories(key_dir):
            kids += encrypt_directory(directory, provider)
            tenants += directory.parent == key_dir / TENANT_KEY_DIRS
    except (KeyStoreError, OSError) as exc:
        fail(str(exc), EXIT_USAGE)
    if provider.new_passphrase_file is not None:
        out.print(
            f"Key passphrase (KEK) written to {provider.new_passphrase_file} (mode 0600): "
            "keep it out of the data directory's backups.",
            highlight=False,
        )
    if not kids:
        out.print(
            f"Every signing key in {key_dir} (every tenant's too) is already encrypted.",
            highlight=False,
        )
    else:
        out.print(
            f"Encrypted {len(kids)} signing key(s) in {key_dir} "
            f"(and the key directories of {tenants} tenant(s) in {TENANT_KEY_DIRS}/; "
            f"passphrase from {provider.source}).",
            highlight=False,
        )
        out.print(
            "Earlier plaintext copies may survive in backups and on disk: once the broker "
            "runs, rotate (tasklease keys rotate) and retire the old keys after their tokens "
            "expire.",
            highlight=False,
        )
    if cfg.key_provider != "file":
        out.print(
            f'Now set key_provider = "file" (it is {cfg.key_provider!r}) in the configuration, '
            "or remove the line: file is the default.",
            highlight=False,
        )


def key_directories(key_dir: Path) -> list[Path]:
    """Every directory of signing keys under ``key_dir`` that the broker opens with its key
    provider: its own, the audit log's beside it (``log/``, docs/audit.md), and each
    tenant's with its log key (``tenants/<name>``, tasklease.tenancy), a removed tenant's
    too (its keys are as secret). ``keys encrypt`` rewrites them; ``doctor`` checks them.

    Raises:
        OSError: ``key_dir/tenants`` cannot be listed.
    """
    from tasklease.core.keydirs import LOG_KEY_DIR, TENANT_KEY_DIRS

    found = [key_dir]
    tenants = key_dir / TENANT_KEY_DIRS
    if tenants.is_dir():
        found += sorted(path for path in tenants.iterdir() if path.is_dir())
    return [
        directory
        for base in found
        for directory in (base, base / LOG_KEY_DIR)
        if directory.is_dir()
    ]


def _as_file_provider(config: Config) -> Config:
    return dataclasses.replace(config, key_provider="file")


def register(keys_app: typer.Typer) -> None:
    """Add ``encrypt`` to the ``keys`` command group."""
    keys_app.command("encrypt")(keys_encrypt)
