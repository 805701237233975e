"""Token ids a federated peer cannot make: the ``jti`` of every agent token we issue.

A chain that went out from here and comes back through token exchange lists the ids of
our token it descends from (``fed:<us>:<jti>``, ``core.foreign``); that is how the
exchange tells a chain our agent really started from a peer's word that it did
(docs/decisions.md 174). A random id proves nothing (a peer can write any string), so an
id we mint authenticates itself: 10 random bytes and the first 6 bytes of their
HMAC-SHA256 under a key derived from the broker's nonce secret and its trust domain, 16
bytes shown as 32 lowercase hex characters, the shape AgentWrit's wire contract gives a
`jti`. 80 random bits keep ids apart (two alike among a trillion tokens is a chance of
about 2**-41); 48 bits of tag make guessing one an online search of 2**48 refused,
audited exchanges. Every replica sharing the secret mints and
recognises the same ids, with no storage and no I/O; another broker (another secret, or
another trust domain) does not recognise ours, nor we its.

An id minted before ids carried a MAC (the same shape, all random) is not recognised but
by a chance of 2**-48: a chain descending from such a token is refused when it comes
back, as one that did not go out from here (tokens live minutes).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

__all__ = ["JTI_HEX_CHARS", "TokenIds", "token_id_label"]

_RANDOM_BYTES = 10
_TAG_BYTES = 6
JTI_HEX_CHARS = 2 * (_RANDOM_BYTES + _TAG_BYTES)
"""The length of a ``jti`` we mint: 32 lowercase hex characters."""
_SHAPE = re.compile(rf"[0-9a-f]{{{JTI_HEX_CHARS}}}")
_CONTEXT = b"tasklease-jti-v1"


def token_id_label(trust_domain: str) -> bytes:
    """The label the token-id key is derived under (``NonceIssuer.derived_key``): one key
    per trust domain, so two domains sharing a secret by mistake still mint apart."""
    return b"token-id:" + trust_domain.encode("utf-8")


class TokenIds:
    """Mints token ids that carry our MAC, and recognises them (module docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("token id key must be at least 32 bytes")
        self._key = key

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, _CONTEXT + body, hashlib.sha256).digest()[:_TAG_BYTES]

    def new(self) -> str:
        """A fresh id: 10 random bytes and their tag, as 32 lowercase hex characters."""
        body = os.urandom(_RANDOM_BYTES)
        return (body + self._tag(body)).hex()

    def ours(self, jti: str) -> bool:
        """True iff ``jti`` is an id minted under this key (constant-time tag check)."""
        if not _SHAPE.fullmatch(jti):
            return False
        raw = bytes.fromhex(jti)
        body, tag = raw[:_RANDOM_BYTES], raw[_RANDOM_BYTES:]
        return hmac.compare_digest(tag, self._tag(body))
