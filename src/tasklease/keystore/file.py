"""The ``file`` key provider (the default): PKCS#8 files encrypted under a passphrase.

Each key is an ``ENCRYPTED PRIVATE KEY`` PEM (PBES2, see ``_pkcs8``) in the key
directory. The passphrase, the key-encryption secret (KEK), comes from
``TASKLEASE_KEY_PASSPHRASE`` or from ``key_passphrase_file`` (a 0600 file; by default
``<data_dir>/key-passphrase``, which ``tasklease init`` fills with 256 random bits).
Keys are decrypted once, at load: the active key then signs from memory (PyNaCl), as
fast as a plaintext key.
"""

from __future__ import annotations

from pathlib import Path

import nacl.signing

from tasklease.keystore import _pkcs8
from tasklease.keystore._directory import (
    ENCRYPTED,
    PLAINTEXT,
    DirectoryProvider,
    KeyFile,
    KeyStoreError,
    ensure_directory,
    key_files,
    kind_of,
    locked,
    read_key_file,
    rewrite_key_file,
)
from tasklease.rules.jws import jwk_thumbprint
from tasklease.rules.secretshapes import is_placeholder

__all__ = ["MIN_PASSPHRASE_CHARS", "EncryptedFileKeyProvider", "encrypt_directory"]

MIN_PASSPHRASE_CHARS = 16
"""The shortest passphrase accepted: the format's key derivation is cheap (``_pkcs8``)."""


class EncryptedFileKeyProvider(DirectoryProvider):
    """Signing keys as encrypted PKCS#8 PEM files (``-----BEGIN ENCRYPTED PRIVATE KEY-----``).

    Args:
        passphrase: the key-encryption secret, at least 16 characters.
        source: where it came from, for messages (never the passphrase itself).

    Raises:
        KeyStoreError: the passphrase is too short.
    """

    name = ENCRYPTED

    def __init__(self, passphrase: bytes, *, source: str = "the key passphrase") -> None:
        if len(passphrase) < MIN_PASSPHRASE_CHARS:
            raise KeyStoreError(
                f"{source} is shorter than {MIN_PASSPHRASE_CHARS} characters: use a random "
                "secret (tasklease init makes one)"
            )
        if is_placeholder(passphrase.decode("utf-8", "replace")):
            raise KeyStoreError(
                f"{source} is the placeholder of an example, not a secret: use a random "
                "secret (tasklease init makes one)"
            )
        self._passphrase = passphrase
        self.source = source
        self.new_passphrase_file: Path | None = None  # set when the file was made for it

    def describe(self, directory: Path) -> str:
        """Where the keys and their passphrase are, for the start-up banner."""
        return f"encrypted PKCS#8 files in {directory}, passphrase from {self.source}"

    def encrypt(self, key: nacl.signing.SigningKey) -> bytes:
        """``key`` as this provider writes it (for ``tasklease keys encrypt``)."""
        return _pkcs8.encode(key, self._passphrase)

    def _open(self, entry: KeyFile, data: bytes, *, active: bool) -> object:
        key = _pkcs8.decode(data, entry.path, self._passphrase)
        self.check_name(entry, jwk_thumbprint(bytes(key.verify_key)))
        return key if active else key.verify_key

    def _kid_of(self, entry: KeyFile, data: bytes) -> str:
        key = _pkcs8.decode(data, entry.path, self._passphrase)
        return jwk_thumbprint(bytes(key.verify_key))

    def _create(self, directory: Path, timestamp: str) -> tuple[str, bytes]:
        key = nacl.signing.SigningKey.generate()
        return jwk_thumbprint(bytes(key.verify_key)), self.encrypt(key)

    def __repr__(self) -> str:
        return f"EncryptedFileKeyProvider(source={self.source!r})"


def encrypt_directory(directory: Path, provider: EncryptedFileKeyProvider) -> list[str]:
    """Re-write every plaintext key in ``directory`` encrypted by ``provider``.

    Each file keeps its name (same key, same place in the order) and is replaced
    atomically. Everything is checked before anything is written: every plaintext key
    must parse, and keys already encrypted must open with this provider's passphrase, so
    a directory never ends up under two passphrases. Returns the kids encrypted now (none
    when everything already was).

    Raises:
        KeyStoreError: a key file is unsafe, corrupt, of the pkcs11 provider, or
            encrypted under another passphrase.
        OSError: a file could not be read or written.
    """
    ensure_directory(directory)
    with locked(directory):
        todo: list[tuple[KeyFile, nacl.signing.SigningKey]] = []
        for entry in key_files(directory):
            data = read_key_file(entry.path)
            kind = kind_of(data)
            if kind == ENCRYPTED:
                provider._open(entry, data, active=False)  # the same passphrase, or refuse
            elif kind == PLAINTEXT:
                key = _pkcs8.decode(data, entry.path, None)
                provider.check_name(entry, jwk_thumbprint(bytes(key.verify_key)))
                todo.append((entry, key))
            else:
                raise KeyStoreError(f"key file {entry.path} is not a private key file")
        for entry, key in todo:
            rewrite_key_file(entry.path, provider.encrypt(key))
        return [jwk_thumbprint(bytes(key.verify_key)) for _, key in todo]
