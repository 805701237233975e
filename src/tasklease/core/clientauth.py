"""JWT client authentication (``private_key_jwt``, RFC 7523 section 2.2) of apps.

An app may register an Ed25519 public key (:func:`app_public_key`: a JWK or the raw key
in base64). At the token endpoint it then authenticates with a JWT it signed
(:func:`check_assertion`): ``iss`` and ``sub`` its client id, ``aud`` the issuer (or
what else the token endpoint allows: ``audiences``), a short life (``exp`` required,
dead at that instant, at most :data:`MAX_ASSERTION_LIFETIME` seconds away), and a
``jti`` that is spent once: :func:`assertion_replay_key` names it in the store's
used-nonce table (shared by workers and replicas) until ``skew`` past its ``exp``: a
replica whose clock runs ahead within the skew prunes it then, when no replica's clock
still takes the assertion as live.

Every failure raises :class:`AssertionRefused`, whose ``reason`` is for the audit log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, NamedTuple

import nacl.exceptions
import nacl.signing

from tasklease.core.errors import InvalidRequest
from tasklease.core.identity import verify_signed
from tasklease.rules import jws
from tasklease.rules.claims import finite_number
from tasklease.rules.jsonnames import JSONTextError, strict_json

__all__ = [
    "ASSERTION_TYPE",
    "MAX_ASSERTION_LIFETIME",
    "AssertionRefused",
    "CheckedAssertion",
    "app_public_key",
    "assertion_issuer",
    "assertion_replay_key",
    "check_assertion",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""RFC 7523 section 2.2's ``client_assertion_type``."""
MAX_ASSERTION_LIFETIME = 300
"""The furthest an assertion's ``exp`` may be, in seconds (from its ``iat`` and from now)."""
MAX_ASSERTION_BYTES = 4096
_MAX_JTI_CHARS = 256
# The assertion's typ, when it has one: plain JWT, or draft-ietf-oauth-rfc7523bis's.
_TYPS = frozenset(("jwt", "client-authentication+jwt"))
_OKP_PUBLIC = frozenset(("kty", "crv", "x"))
_JWK_OPTIONAL = frozenset(("kid", "use", "alg", "key_ops"))
NO_KEY = "the app has no public key registered (private_key_jwt)"
_KEY_HINT = (
    "an Ed25519 public key: a JWK (kty OKP, crv Ed25519, x) or the 32 raw bytes in "
    "base64 or base64url"
)


class AssertionRefused(Exception):
    """A client assertion that does not authenticate its client; ``reason`` is inward."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CheckedAssertion(NamedTuple):
    """An assertion that passed every check but the replay check: spend ``replay_key``
    until ``expires_at`` (its ``exp`` plus the clock skew)."""

    jti: str
    replay_key: str
    expires_at: float


def _jwk_key(jwk: dict[str, Any]) -> bytes:
    if "d" in jwk:
        raise InvalidRequest("public_key is a private key", hint="send the public JWK only (no d)")
    if not set(jwk) >= _OKP_PUBLIC or not set(jwk) <= _OKP_PUBLIC | _JWK_OPTIONAL:
        raise InvalidRequest(f"public_key must be {_KEY_HINT}")
    if jwk["kty"] != "OKP" or jwk["crv"] != "Ed25519" or type(jwk["x"]) is not str:
        raise InvalidRequest(f"public_key must be {_KEY_HINT}")
    if jwk.get("alg", "EdDSA") not in jws.KNOWN_KEY_ALGORITHMS:
        raise InvalidRequest("public_key: its alg must be EdDSA or Ed25519")
    try:
        return jws.b64url_decode(jwk["x"])
    except jws.JWSError:
        raise InvalidRequest("public_key: x is not base64url") from None


def app_public_key(value: object) -> str:
    """An app's public key as stored: base64url of the raw 32-byte Ed25519 key.

    ``value`` is a JWK (an object, or its JSON text) or the raw key in base64 or
    base64url (padded or not).

    Raises:
        InvalidRequest: anything else, a private JWK, or not a valid Ed25519 point.
    """
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = strict_json(value, "public_key")
        except JSONTextError as exc:
            raise InvalidRequest(f"public_key must be {_KEY_HINT} ({exc})") from None
    if isinstance(value, dict):
        raw = _jwk_key(value)
    elif isinstance(value, str) and 40 <= len(value.strip()) <= 48:
        text = value.strip().rstrip("=").replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"public_key must be {_KEY_HINT}") from None
    else:
        raise InvalidRequest(f"public_key must be {_KEY_HINT}")
    if len(raw) != 32:
        raise InvalidRequest("public_key: an Ed25519 public key is 32 bytes")
    try:
        nacl.signing.VerifyKey(raw)
    except (nacl.exceptions.CryptoError, ValueError):
        raise InvalidRequest("public_key is not an Ed25519 public key") from None
    return jws.b64url_encode(raw)


def assertion_issuer(assertion: str) -> str | None:
    """The (unverified) ``iss`` of an assertion, to find the app whose key checks it;
    None when the assertion cannot be parsed or has no string ``iss``."""
    try:
        _, claims = jws.decode_unverified(assertion, max_bytes=MAX_ASSERTION_BYTES)
    except jws.JWSError:
        return None
    iss = claims.get("iss")
    return iss if type(iss) is str and 0 < len(iss) <= 128 else None


def assertion_replay_key(client_id: str, jti: str) -> str:
    """The used-nonce key of an app's assertion ``jti``: SHA-256 hex, domain-separated
    from the other nonces the table holds."""
    material = f"tasklease-client-assertion\x00{client_id}\x00{jti}".encode()
    return hashlib.sha256(material).hexdigest()


def _number(claims: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    number = finite_number(value)
    if number is None:
        raise AssertionRefused(f"{name} {'missing or ' if required else ''}not a number")
    return number


def check_assertion(
    assertion: str,
    *,
    public_key: str,
    client_id: str,
    audiences: tuple[str, ...],
    now: float,
    skew: float,
) -> CheckedAssertion:
    """Verify an app's client assertion with its registered ``public_key``.

    With none ("": an app with a secret only, or no app: a client id nobody has) the
    signature is checked all the same, against a key nobody holds
    (``core.identity.verify_signed``), and refused: the time taken does not say whether
    the client id exists or has a key (docs/decisions.md 334).

    The signature (``alg`` EdDSA or Ed25519, never ``none`` or ``HS*``; no header
    parameter naming another key), then: ``iss`` and ``sub`` equal to ``client_id``;
    ``aud`` one string (or a list of one) among ``audiences``; ``exp`` required, dead at
    that instant and at most :data:`MAX_ASSERTION_LIFETIME` seconds after ``iat`` and
    after now (+ ``skew``); ``iat`` and ``nbf``, when present, no later than now +
    ``skew``; ``jti`` required, 1 to 256 characters.

    Its ``jti`` is to be spent until ``skew`` past ``exp``: the store is pruned by the
    clock of each process sharing it, one of which may run ``skew`` ahead of the one that
    takes the assertion as live until ``exp``.

    Raises:
        AssertionRefused: with the precise reason.
    """
    raw = jws.b64url_decode(public_key) if public_key else None

    def verify(message: bytes, signature: bytes) -> bool:
        return verify_signed(raw, message, signature)

    try:
        claims = jws.decode_with_key(assertion, verify, typs=_TYPS, max_bytes=MAX_ASSERTION_BYTES)
    except jws.JWSError as exc:
        if raw is None:
            raise AssertionRefused(NO_KEY) from None
        raise AssertionRefused(f"client assertion refused: {exc.reason}") from None
    if raw is None:  # pragma: no cover - no signature verifies without a key
        raise AssertionRefused(NO_KEY)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRefused("client assertion iss and sub must both be the client_id")
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if type(aud) is not str or aud not in audiences:
        raise AssertionRefused("client assertion aud is not the issuer (or one allowed here)")
    exp = _number(claims, "exp", required=True)
    iat = _number(claims, "iat", required=False)
    nbf = _number(claims, "nbf", required=False)
    if exp is None or now >= exp:
        raise AssertionRefused("client assertion expired")
    if exp > now + skew + MAX_ASSERTION_LIFETIME or (
        iat is not None and exp - iat > MAX_ASSERTION_LIFETIME
    ):
        raise AssertionRefused(
            f"client assertion lives longer than {MAX_ASSERTION_LIFETIME} seconds"
        )
    for name, value in (("iat", iat), ("nbf", nbf)):
        if value is not None and value > now + skew:
            raise AssertionRefused(f"client assertion {name} is in the future")
    jti = claims.get("jti")
    if type(jti) is not str or not 1 <= len(jti) <= _MAX_JTI_CHARS:
        raise AssertionRefused("client assertion jti missing or malformed")
    return CheckedAssertion(jti, assertion_replay_key(client_id, jti), exp + skew)
