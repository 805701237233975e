"""The ``plaintext`` key provider: unencrypted PKCS#8 files, only by explicit choice.

Anyone who can read the key directory (a backup, a copied volume, a misplaced archive)
can then sign tokens. A broker uses it only with ``key_provider = "plaintext"``; data
directories made before key providers existed keep working that way until their keys are
encrypted (``tasklease keys encrypt``).
"""

from __future__ import annotations

from pathlib import Path

import nacl.signing

from tasklease.keystore import _pkcs8
from tasklease.keystore._directory import PLAINTEXT, DirectoryProvider, KeyFile
from tasklease.rules.jws import jwk_thumbprint

__all__ = ["PlaintextKeyProvider"]


class PlaintextKeyProvider(DirectoryProvider):
    """Signing keys as unencrypted PKCS#8 PEM files (``-----BEGIN PRIVATE KEY-----``)."""

    name = PLAINTEXT

    def describe(self, directory: Path) -> str:
        """Where the keys are, for the start-up banner."""
        return f"UNENCRYPTED PKCS#8 files in {directory} (key_provider = plaintext)"

    def _open(self, entry: KeyFile, data: bytes, *, active: bool) -> object:
        key = _pkcs8.decode(data, entry.path, None)
        self.check_name(entry, jwk_thumbprint(bytes(key.verify_key)))
        return key if active else key.verify_key

    def _kid_of(self, entry: KeyFile, data: bytes) -> str:
        return jwk_thumbprint(bytes(_pkcs8.decode(data, entry.path, None).verify_key))

    def _create(self, directory: Path, timestamp: str) -> tuple[str, bytes]:
        key = nacl.signing.SigningKey.generate()
        return jwk_thumbprint(bytes(key.verify_key)), _pkcs8.encode(key, None)
