"""Key providers: where the broker's signing keys live and how they are protected.

* ``file`` (the default, :class:`EncryptedFileKeyProvider`): encrypted PKCS#8 files under
  a passphrase from ``TASKLEASE_KEY_PASSPHRASE`` or ``key_passphrase_file``;
* ``pkcs11`` (:class:`Pkcs11KeyProvider`): keys made and used inside an HSM;
* ``plaintext`` (:class:`PlaintextKeyProvider`): unencrypted files, only when the
  configuration says so.

Beside the audit log's key, :class:`CheckpointFiles` keeps the last checkpoint it signed
(``core.rollback``: a database that went back in time is noticed).

:func:`open_key_provider` builds the one a :class:`~tasklease.core.config.Config` names,
reading its secrets (passphrase, PIN) from the environment or from 0600 files; the core
sees a provider only through :class:`tasklease.core.keys.KeyProvider`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Literal

from tasklease.core.config import Config
from tasklease.keystore._directory import (
    PLAINTEXT,
    KeyStoreError,
    ensure_directory,
    key_files,
    kind_of,
    plaintext_refused,
    read_key_file,
    read_private_file,
)
from tasklease.keystore.anchors import CheckpointFiles
from tasklease.keystore.file import EncryptedFileKeyProvider, encrypt_directory
from tasklease.keystore.pkcs11 import Pkcs11KeyProvider, Pkcs11Signer
from tasklease.keystore.plaintext import PlaintextKeyProvider

__all__ = [
    "PASSPHRASE_ENV",
    "PIN_ENV",
    "CheckpointFiles",
    "EncryptedFileKeyProvider",
    "KeyStoreError",
    "Pkcs11KeyProvider",
    "Pkcs11Signer",
    "PlaintextKeyProvider",
    "Provider",
    "create_passphrase_file",
    "encrypt_directory",
    "ensure_directory",
    "open_key_provider",
    "passphrase_file",
    "private_file_writer",
    "read_private_file",
    "read_secret_file",
    "write_private_file",
]

PASSPHRASE_ENV = "TASKLEASE_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
"""The environment variable that holds the ``file`` provider's passphrase."""
PIN_ENV = "TASKLEASE_PKCS11_PIN"
"""The environment variable that holds the PKCS#11 user PIN."""

_DEFAULT_KEK_FILE = "key-passphrase"
_MAX_SECRET_FILE_BYTES = 4096

Provider = EncryptedFileKeyProvider | Pkcs11KeyProvider | PlaintextKeyProvider


def passphrase_file(config: Config) -> Path:
    """The ``file`` provider's passphrase file: the setting, else ``<data_dir>/key-passphrase``."""
    if config.key_passphrase_file:
        return Path(config.key_passphrase_file)
    return Path(config.data_dir) / _DEFAULT_KEK_FILE


def open_key_provider(
    config: Config,
    env: Mapping[str, str] | None = None,
    *,
    create_kek_file: Literal["never", "when-no-keys", "yes"] = "never",
) -> Provider:
    """The key provider ``config.key_provider`` names, with its secrets.

    ``file``: the passphrase is ``TASKLEASE_KEY_PASSPHRASE`` if set, else the contents of
    :func:`passphrase_file`. When neither exists and ``key_passphrase_file`` is not set, a
    random passphrase file is made at the default place if ``create_kek_file`` is
    ``"yes"``, or ``"when-no-keys"`` and the key directory holds no key yet; the
    provider's ``new_passphrase_file`` then names it. ``pkcs11``: the PIN is
    ``TASKLEASE_PKCS11_PIN`` if set, else the contents of ``pkcs11_pin_file``.

    Raises:
        KeyStoreError: a secret is missing, too short, or in a file that others can read
            (or that is not a regular file of this user); for ``file`` without a
            passphrase the message says how to give one, or, when the directory holds
            plaintext keys, how to migrate them.
        OSError: a file could not be read or written.
    """
    env = os.environ if env is None else env
    if config.key_provider == "plaintext":
        return PlaintextKeyProvider()
    if config.key_provider == "pkcs11":
        pin = env.get(PIN_ENV) or (
            read_secret_file(Path(config.pkcs11_pin_file), "pkcs11_pin_file")
            if config.pkcs11_pin_file
            else ""
        )
        if not pin:
            raise KeyStoreError(
                f'key_provider = "pkcs11" needs the token PIN: set {PIN_ENV} or pkcs11_pin_file'
            )
        return Pkcs11KeyProvider(
            config.pkcs11_module, config.pkcs11_token_label, pin, config.pkcs11_key_label
        )
    raw = env.get(PASSPHRASE_ENV)
    if raw:
        return EncryptedFileKeyProvider(raw.encode("utf-8"), source=PASSPHRASE_ENV)
    path = passphrase_file(config)
    if config.key_passphrase_file or os.path.lexists(path):
        secret = read_secret_file(path, "key_passphrase_file")
        return EncryptedFileKeyProvider(secret.encode("utf-8"), source=str(path))
    key_dir = Path(config.key_dir or Path(config.data_dir) / "keys")
    kinds = _kinds_in(key_dir)
    if create_kek_file == "yes" or (create_kek_file == "when-no-keys" and not kinds):
        provider = EncryptedFileKeyProvider(
            create_passphrase_file(path).encode("utf-8"), source=str(path)
        )
        provider.new_passphrase_file = path
        return provider
    plaintext = kinds.count(PLAINTEXT)
    if plaintext:
        raise plaintext_refused(key_dir, plaintext, "file")
    raise KeyStoreError(
        f"no key passphrase for the encrypted signing keys in {key_dir}: set {PASSPHRASE_ENV}, "
        f"or key_passphrase_file, or put the passphrase file back at {path}"
    )


def _kinds_in(key_dir: Path) -> list[str | None]:
    if not key_dir.is_dir():
        return []
    return [kind_of(read_key_file(entry.path)) for entry in key_files(key_dir)]


def read_secret_file(path: Path, setting: str) -> str:
    """A secret kept in a file: its text without surrounding whitespace.

    The file must be a regular file of this user that group and others cannot read or
    write (mode 0600 or stricter), not a symlink.

    Raises:
        KeyStoreError: missing, unsafe, empty, too large or not UTF-8 (the message names
            ``setting`` and the path, never the contents).
        OSError: it could not be read.
    """
    try:
        data = read_private_file(
            path, f"{setting}: {path}", _MAX_SECRET_FILE_BYTES, fix=f": chmod 600 {path}"
        )
    except FileNotFoundError:
        raise KeyStoreError(f"{setting}: {path} does not exist") from None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyStoreError(f"{setting}: {path} is not UTF-8 text") from None
    if not text or len(data) > _MAX_SECRET_FILE_BYTES:
        raise KeyStoreError(f"{setting}: {path} is empty or too large")
    return text


def create_passphrase_file(path: Path) -> str:
    """Make a 0600 file holding a new random passphrase (256 bits); return the passphrase.

    Never replaces an existing file (:func:`write_private_file`).

    Raises:
        FileExistsError: ``path`` exists.
        OSError: it could not be written.
    """
    passphrase = secrets.token_urlsafe(32)
    write_private_file(path, (passphrase + "\n").encode("ascii"))
    return passphrase


def write_private_file(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``data`` as a new file of this user, mode 0600, at ``path``.

    Written beside it first (created exclusively, never through a link, 0600 from its
    first byte), fsynced, then linked into place (``replace`` false: an existing file is
    never touched) or renamed over an existing one (``replace``), so it appears whole or
    not at all and never takes the mode or owner of a file that was there. Its directory
    is made (0700) when missing.

    Raises:
        FileExistsError: ``path`` exists and ``replace`` is false.
        KeyStoreError: the directory is unsafe (writable by others) or not a directory.
        OSError: it could not be written.
    """
    with private_file_writer(path, replace=replace) as fh:
        fh.write(data)


@contextlib.contextmanager
def private_file_writer(
    path: Path, *, replace: bool = False, make_directory: bool = True
) -> Iterator[BinaryIO]:
    """:func:`write_private_file` for what is written in pieces: a handle on the new
    file, which appears at ``path`` when the ``with`` block ends without an exception
    (and never, nor any part of it, when it raises).

    ``make_directory`` false: a missing directory is an OSError (ENOENT), not made.

    Raises:
        FileExistsError: ``path`` exists and ``replace`` is false (checked before the
            block runs, and again when the file is linked into place).
        KeyStoreError: the directory had to be made and is unsafe or not a directory.
        OSError: it could not be written.
    """
    directory = path.parent
    if make_directory and not directory.exists():
        ensure_directory(directory)
    if not replace and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    temporary = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(temporary, path)  # a link at ``path`` is replaced, not followed
        else:
            os.link(temporary, path)  # unlike rename, never replaces an existing file
    finally:
        temporary.unlink(missing_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
