"""Challenge-response identity: nonces and the agent's proof of key possession.

Nonces are *stateless until used*: 16 random bytes, an 8-byte expiry and an 8-byte
HMAC-SHA256 tag under a broker secret, 32 bytes shown as 64 hex characters (the shape
AgentWrit's SDK expects). ``GET /v1/challenge`` therefore costs no storage and no memory,
however often it is called, and any replica sharing the secret accepts a nonce issued by
another. Single use is enforced when a nonce is spent: its hash is recorded in the same
transaction as the registration (``WriteTx.consume_nonce``) until it expires.

Registration and resumption prove a key by signing the same bytes, so a nonce is spent by
the request that presents it whatever the answer (:func:`spending`): a signature in a
refused registration, seen by whoever logs request bodies, resumes no agent, and one in a
refused resumption registers none (decision 262).

The agent signs the 32 hex-decoded nonce bytes (not the ASCII text) with Ed25519; the
public key and signature are standard base64 with padding (AgentWrit v2 wire contract).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable

from nacl.signing import SigningKey, VerifyKey

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import InvalidRequest, TaskleaseError, Unauthorized
from tasklease.core.store import WriteTx
from tasklease.rules import jws as _jws
from tasklease.rules.claims import is_expired
from tasklease.rules.messages import challenge_nonce_bytes

__all__ = [
    "NonceIssuer",
    "decode_public_key",
    "decode_signature",
    "nonce_hash",
    "registration_mark",
    "reserving",
    "spending",
    "verify_possession",
    "verify_signed",
]

_STD_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class NonceIssuer:
    """Issues and checks self-authenticating nonces (see the module docstring)."""

    def __init__(self, secret: bytes, ttl: int) -> None:
        if len(secret) < 32:
            raise ValueError("nonce secret must be at least 32 bytes")
        self._secret = secret
        self.ttl = ttl

    def for_tenant(self, tenant: str) -> NonceIssuer:
        """The issuer of ``tenant``'s nonces: its secret derived from this one, so a nonce
        one tenant issued is not accepted by another's."""
        derived = hmac.new(self._secret, b"tasklease-tenant-nonce-v1:" + tenant.encode(), "sha256")
        return NonceIssuer(derived.digest(), self.ttl)

    def derived_key(self, label: bytes) -> bytes:
        """A 32-byte key for another purpose (``label``), derived from this secret: shared
        by the replicas that share it, and never the nonces' own key."""
        return hmac.new(self._secret, b"tasklease-derived-v1:" + label, hashlib.sha256).digest()

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._secret, b"tasklease-nonce-v1" + body, hashlib.sha256).digest()[:8]

    def issue(self, now: float) -> str:
        body = os.urandom(16) + struct.pack(">Q", int(now) + self.ttl)
        return (body + self._tag(body)).hex()

    def check(self, nonce: str, now: float) -> int:
        """Return the nonce's expiry, or raise :class:`Unauthorized` if not ours or expired."""
        try:
            raw = challenge_nonce_bytes(nonce)
        except ValueError:
            raise InvalidRequest(
                "nonce must be the 64 lowercase hex characters from /v1/challenge"
            ) from None
        body, tag = raw[:24], raw[24:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise Unauthorized("nonce: nonce not found or expired", reason="nonce not issued by us")
        (expires,) = struct.unpack(">Q", body[16:24])
        if is_expired(expires, now):
            raise Unauthorized("nonce: nonce not found or expired", reason="nonce expired")
        return int(expires)

    def live(self, nonce: object, now: float) -> int | None:
        """The expiry of ``nonce`` if it is one of ours and live, else None (never raises)."""
        if not isinstance(nonce, str):
            return None
        try:
            return self.check(nonce, now)
        except TaskleaseError:
            return None


def nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


def registration_mark(nonce: str) -> str:
    """What a registration asked to come again keeps among the spent nonces under its
    nonce: a resumption's unit spends this mark too, so the registration's signature
    resumes no agent while the registration may still spend the nonce (decision 268)."""
    return hashlib.sha256(b"tasklease-registration-again-v1:" + nonce.encode("ascii")).hexdigest()


def reserving(
    nonce: str, until: float, *entries: AuditEntry
) -> Callable[[WriteTx], list[AuditEntry]]:
    """A registration asked to come again: its nonce kept for registration (recorded until
    ``until``, see :func:`registration_mark`) with the answer's audit entries."""
    mark = registration_mark(nonce)

    def unit(tx: WriteTx) -> list[AuditEntry]:
        tx.consume_nonce(mark, until)  # False: marked already by an earlier answer
        return list(entries)

    return unit


def spending(
    nonce: str, until: float, *entries: AuditEntry
) -> Callable[[WriteTx], list[AuditEntry]]:
    """A refused request's write: ``nonce`` spent (recorded until ``until``) with the
    refusal's audit entries, if any (a malformed request's refusal has none)."""
    n_hash = nonce_hash(nonce)

    def unit(tx: WriteTx) -> list[AuditEntry]:
        tx.consume_nonce(n_hash, until)  # False: spent already, which is as good
        return list(entries)

    return unit


def _std_b64(value: object, *, field: str, size: int) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"missing required field: {field}")
    if len(value) % 4 or not _STD_B64.fullmatch(value):
        raise InvalidRequest(f"invalid {field}: not standard base64 with padding")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"invalid {field}: not standard base64 with padding") from exc
    if len(raw) != size:
        raise InvalidRequest(f"invalid {field}: expected {size} bytes, got {len(raw)}")
    return raw


def decode_public_key(value: object, *, field: str = "public_key") -> bytes:
    """A raw 32-byte Ed25519 public key from standard base64 (400 naming ``field`` on
    anything else)."""
    raw = _std_b64(value, field=field, size=32)
    try:
        VerifyKey(raw)
    except Exception as exc:
        raise InvalidRequest(f"invalid {field}: not an Ed25519 public key") from exc
    return raw


def decode_signature(value: object) -> bytes:
    return _std_b64(value, field="signature", size=64)


# A key whose private half was never kept: what a signature is checked against when the
# name it is presented for has no key (core.passwords' unmatched hash, for signatures).
_UNMATCHED_KEY = bytes(SigningKey.generate().verify_key)


def verify_signed(public_key: bytes | None, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is the Ed25519 signature of ``message`` by ``public_key``.

    Constant work: with no key (``None`` or empty: a name no one has, or one with no key
    to sign in with) the signature is checked against a key nobody holds and is False,
    so a refusal takes the time a wrong signature's does, and its time does not say
    whether the name has a key."""
    key = public_key or _UNMATCHED_KEY
    return _jws.verify_detached(message, signature, VerifyKey(key)) and bool(public_key)


def verify_possession(public_key: bytes | None, nonce: str, signature: bytes) -> bool:
    """True iff ``signature`` is the key holder's Ed25519 signature of the nonce bytes
    (:func:`verify_signed`: the same work when there is no key)."""
    return verify_signed(public_key, challenge_nonce_bytes(nonce), signature)
