"""Secrets at rest: argon2id hashes for the admin secret and app client secrets, and the
one rule a plain-text admin secret must meet (:func:`secret_weakness`)."""

from __future__ import annotations

import base64
import secrets

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tasklease.rules.secretshapes import is_placeholder

__all__ = [
    "HASH_LEN",
    "MIN_SALT_LEN",
    "MIN_SECRET_DISTINCT",
    "MIN_SECRET_LENGTH",
    "hash_problem",
    "hash_secret",
    "new_secret",
    "secret_weakness",
    "verify_secret",
]

MIN_SECRET_LENGTH = 24
"""Fewest characters of a plain-text admin secret (``new_secret`` makes 64)."""
MIN_SECRET_DISTINCT = 8
"""Fewest distinct characters of one: ``aaaa…`` or ``abab…`` is guessed, whatever its length."""

# RFC 9106 second recommended option (t=3, m=64 MiB, p=4): tens of milliseconds per check,
# which the rate limits on the two auth endpoints make affordable.
_hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)

HASH_LEN = _hasher.hash_len
"""Fewest bytes of a stored hash's digest (32: what :func:`hash_secret`, argon2's reference
tool and the common libraries write; RFC 9106 recommends a 256-bit tag)."""
MIN_SALT_LEN = 8
"""Fewest bytes of a stored hash's salt: argon2's own minimum (RFC 9106 section 3.1)."""


def _unmatched_hash() -> str:
    """An argon2id hash in :data:`_hasher`'s parameters that no secret matches: a random
    salt and a random digest. Checking a secret against it costs what checking against a
    stored hash does (the same parameters are run, then the digests differ), so an
    unknown name is answered in the time a wrong secret is; and it costs nothing to make,
    which hashing a random secret at import would (every process that loads this module,
    each CLI command among them, would pay one full hash)."""

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode().rstrip("=")

    h = _hasher
    return (
        f"$argon2id$v=19$m={h.memory_cost},t={h.time_cost},p={h.parallelism}"
        f"${b64(secrets.token_bytes(h.salt_len))}${b64(secrets.token_bytes(h.hash_len))}"
    )


_UNMATCHED_HASH = _unmatched_hash()


def new_secret() -> str:
    """32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to be the admin secret, or None when it is not.

    The one rule for a plain-text admin secret, applied where one is given
    (``TASKLEASE_ADMIN_SECRET`` when the configuration is loaded, so ``serve`` refuses
    it) and by ``tasklease doctor``: at least :data:`MIN_SECRET_LENGTH` characters, at
    least :data:`MIN_SECRET_DISTINCT` distinct ones, and not one of the placeholders the
    examples show. A floor against the guessable, not a measure of entropy: the secret
    should be random (:func:`new_secret`). The reason never quotes the secret. A hash
    (``admin_secret_hash``) cannot be checked: only the plain text can.
    """
    if len(secret) < MIN_SECRET_LENGTH:
        return f"it is shorter than {MIN_SECRET_LENGTH} characters ({len(secret)})"
    distinct = len(set(secret))
    if distinct < MIN_SECRET_DISTINCT:
        return f"it has fewer than {MIN_SECRET_DISTINCT} distinct characters ({distinct})"
    if is_placeholder(secret):
        return "it is the placeholder of an example, not a secret"
    return None


def hash_problem(stored: str) -> str | None:
    """Why ``stored`` is no hash :func:`verify_secret` can match a secret against, or None.

    Only the form is judged (an argon2 PHC string, ``$argon2id$v=19$m=...,t=...,p=...$
    <salt>$<hash>``, as :func:`hash_secret` writes), never the secret it was made from: a
    hash shows nothing of that. One that is not (another scheme's, or one a shell or
    Compose emptied each ``$word`` of) matches no secret, so the admin secret would never
    sign in. The reason never quotes the hash.
    """
    try:
        parameters = extract_parameters(stored)
    except (InvalidHashError, ValueError):
        return "it is not an argon2 hash ($argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>)"
    if not parameters.salt_len or not parameters.hash_len:
        return "it is an argon2 hash without its salt or digest"
    # The salt and digest as the encoded form writes them: unpadded base64 of whole bytes,
    # the digest HASH_LEN bytes or more. A hash with characters cut off or changed fails
    # this (a cut 32-byte digest is shorter; most cuts are no base64 of whole bytes).
    *_, salt, digest = stored.split("$")
    salt_len, digest_len = _b64_length(salt), _b64_length(digest)
    if salt_len is None or digest_len is None:
        return "its salt or digest is not the unpadded base64 of whole bytes: it was cut or changed"
    if salt_len < MIN_SALT_LEN:
        return f"its salt is {salt_len} bytes, fewer than argon2's {MIN_SALT_LEN}: it was cut"
    if digest_len < HASH_LEN:
        return f"its digest is {digest_len} bytes, fewer than {HASH_LEN}: it was cut"
    return None


def _b64_length(text: str) -> int | None:
    """How many bytes ``text`` encodes as the argon2 encoded form writes them (standard
    base64 without padding, nothing left over), or None when it is no such encoding."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        return None
    if base64.b64encode(raw).decode("ascii").rstrip("=") != text:
        return None  # a length no bytes have, or bits left over: characters were cut
    return len(raw)


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Constant-work check: an unknown user costs the same as a wrong secret."""
    try:
        return _hasher.verify(stored_hash or _UNMATCHED_HASH, secret) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
