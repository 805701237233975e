"""Ed25519 private keys as PKCS#8 PEM (RFC 5958, RFC 8410), encrypted or not.

Encryption is what ``cryptography`` offers for PKCS#8: ``BestAvailableEncryption``, today
PBES2 (RFC 8018) with PBKDF2-HMAC-SHA256 and AES-256-CBC. Its PBKDF2 iteration count is
the library's (2,048 in cryptography 44 to 50) and cannot be raised for PKCS#8, so the
passphrase must itself be a strong secret: ``tasklease init`` makes a random 256-bit
one, and shorter than 16 characters is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasklease.keystore._directory import KeyStoreError

__all__ = ["decode", "encode"]


def encode(key: nacl.signing.SigningKey, passphrase: bytes | None) -> bytes:
    """PEM of ``key``: ``ENCRYPTED PRIVATE KEY`` under ``passphrase``, else ``PRIVATE KEY``."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return Ed25519PrivateKey.from_private_bytes(bytes(key)).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def decode(data: bytes, path: Path, passphrase: bytes | None) -> nacl.signing.SigningKey:
    """The key in a PEM file's ``data``, decrypted with ``passphrase`` when given.

    Raises:
        KeyStoreError: corrupt, not PKCS#8, not Ed25519, or (with a passphrase) it does
            not decrypt: the message says "wrong key passphrase".
    """
    try:
        private_key: Any = serialization.load_pem_private_key(data, password=passphrase)
    except ValueError:
        # A wrong passphrase mostly fails the padding check ("bad password"), but about
        # one time in 256 the padding happens to look right and the garbage fails to
        # parse instead: for an encrypted file both mean the passphrase did not open it.
        if passphrase is not None and b"ENCRYPTED PRIVATE KEY" in data:
            raise KeyStoreError(
                f"cannot decrypt key file {path}: wrong key passphrase, or a damaged file "
                "(TASKLEASE_KEY_PASSPHRASE or the key_passphrase_file)"
            ) from None
        raise KeyStoreError(f"key file {path} is corrupt or not a PKCS#8 key") from None
    except TypeError:
        # Encrypted without a passphrase, or a passphrase for an unencrypted key.
        raise KeyStoreError(f"key file {path} is not the kind of key expected") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeyStoreError(f"key file {path} is not an Ed25519 key")
    return nacl.signing.SigningKey(private_key.private_bytes_raw())
