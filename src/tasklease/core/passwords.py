"""Secrets at rest: argon2id hashes for the admin secret and app client secrets."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["hash_secret", "new_secret", "verify_secret"]

# RFC 9106 second recommended option (t=3, m=64 MiB, p=4): tens of milliseconds per check,
# which the rate limits on the two auth endpoints make affordable.
_hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
_DUMMY_HASH = _hasher.hash(secrets.token_hex(32))


def new_secret() -> str:
    """32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Constant-work check: an unknown user costs the same as a wrong secret."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
