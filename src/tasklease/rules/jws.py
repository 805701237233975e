"""Compact EdDSA JWS: the only module that touches the bytes of a token.

Hazmat: the recipes (``core.tokens``, ``core.keys``, the offline verifier, the agent SDK)
build on it, and everything else calls those. It implements exactly one profile of JWS
Compact Serialization (RFC 7515 section 7.1) with the ``EdDSA`` algorithm over Ed25519
(RFC 8037 section 3.1):

* the protected header is ``{"alg":"EdDSA","typ":<typ>,"kid":<kid>}`` and nothing else;
* the signature is Ed25519 (PyNaCl / libsodium) over the ASCII signing input
  ``BASE64URL(header) || '.' || BASE64URL(payload)`` (RFC 7515 section 5.1);
* base64url is the unpadded, canonical form of RFC 7515 section 2 / RFC 4648 section 5.

:func:`decode` parses, then verifies; the caller validates claims afterwards. The
algorithm comes from our allow-list, never from the header: a header naming anything but
``EdDSA`` is refused before a key is even looked up (RFC 8725 sections 2.1 and 3.1), and
header parameters that point elsewhere for keys (``jku``, ``x5u``, ``jwk``, ``x5c``) or
change processing (``crit``, ``b64``) are refused, never followed.

Every failure raises :class:`JWSError` whose ``reason`` is precise and meant for the
audit log and debug logs only; callers show one generic failure outward.

Cost (2-core machine of the project's kind, Python 3.11, PyNaCl 1.6.2, msgspec 0.22,
917-byte tokens, one core): raw ``VerifyKey.verify`` ~56 us; :func:`decode_parts` ~5 us
of work besides libsodium's: ~0.5 us split and (remembered) header, ~0.25 us kid, ~0.6 us
signature base64url, ~0.4 us handing the signature to libsodium, ~1.2 us payload
base64url, ~2 us payload JSON. The signature is checked by ``crypto_sign_open`` without
an output buffer, reading the signing input in place in the token's bytes (~2.5 us less
than ``VerifyKey.verify``). Base64url is one ``bytes.translate`` (which also turns every
byte outside the alphabet into one that strict decoders refuse) and a strict decoder:
msgspec's (three times faster) or binascii's; any refusal is re-checked rule by rule for
its reason. JSON is parsed by msgspec and accepted on that fast path only if re-encoding
gives the same bytes (which rules out duplicate names); otherwise the stdlib decoder with
a duplicate-name hook decides. Headers that came with a valid signature are remembered by
segment (~3 us per token). The base64url and JSON decoders are in ``rules._codec``; this
module calls them directly, with no layer between.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Container, Iterable
from typing import Any, NamedTuple

import nacl.exceptions
import nacl.signing

from tasklease.rules._codec import (
    CANONICAL_LAST_BYTE,
    JWSError,
    b64_span,
    b64url_decode,
    b64url_decode_checked,
    b64url_decode_for,
    b64url_encode,
    fast_json_object,
    json_object,
    json_object_strict,
    signed_payload_checked,
)

__all__ = [
    "ALGORITHM",
    "KNOWN_KEY_ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "Decoded",
    "JWSError",
    "b64url_decode",
    "b64url_encode",
    "decode",
    "decode_embedded_key",
    "decode_parts",
    "decode_parts_claimed",
    "decode_unverified",
    "decode_with_key",
    "encode",
    "jwk_thumbprint",
    "media_type",
    "payload_object",
    "sign_detached",
    "verify_detached",
    "verify_raw",
]

MAX_TOKEN_BYTES = 8192
"""Default cap on a token's length, checked before any decoding or cryptography."""

ALGORITHM = "EdDSA"
"""The one JWS ``alg`` this codec signs and accepts (RFC 8037 section 3.1)."""
SIGNATURE_BYTES = 64
MAX_KID_CHARS = 128

_ALLOWED_HEADER_PARAMS = frozenset(("alg", "typ", "kid"))
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PRINTABLE_PARAM = re.compile(r"[A-Za-z0-9_.#-]{1,32}")


class Decoded(NamedTuple):
    """A token whose header was accepted and whose signature verified.

    ``claims`` has not been validated: ``exp``, ``aud`` and the rest are the caller's.
    """

    typ: str
    kid: str
    claims: dict[str, Any]


# -- compact serialization -----------------------------------------------------------


def encode(payload: bytes, *, typ: str, kid: str, key: nacl.signing.SigningKey) -> str:
    """Sign ``payload`` (already-serialized JSON) as a compact JWS (RFC 7515 section 7.1).

    The protected header is exactly ``{"alg":"EdDSA","typ":<typ>,"kid":<kid>}`` in that
    order; the signature is Ed25519 over the ASCII signing input (RFC 8037 section 3.1).

    Raises:
        JWSError: ``kid`` is not 1 to 128 characters of ``[A-Za-z0-9_-]``.
    """
    if type(kid) is not str or _KID.fullmatch(kid) is None:
        raise JWSError("kid malformed")
    if type(typ) is not str:
        raise JWSError("typ not a string")
    header = f'{{"alg":"EdDSA","typ":{json.dumps(typ)},"kid":"{kid}"}}'.encode("ascii")
    signing_input = (b64url_encode(header) + "." + b64url_encode(payload)).encode("ascii")
    signature: bytes = key.sign(signing_input).signature
    return signing_input.decode("ascii") + "." + b64url_encode(signature)


def decode(
    token: str,
    *,
    resolve_key: Callable[[str], nacl.signing.VerifyKey | None],
    allowed_typs: Container[str],
    max_bytes: int = MAX_TOKEN_BYTES,
) -> Decoded:
    """Parse a compact JWS and verify its EdDSA signature.

    In order, each step only when the one before passed:

    1. the length is at most ``max_bytes`` (before any decoding or cryptography);
    2. ASCII, exactly three non-empty ``.``-separated segments (RFC 7515 section 7.1);
    3. the header: strict base64url, a JSON object without duplicate names
       (RFC 7515 section 5.2), only ``alg``, ``typ`` and ``kid``; ``alg`` exactly
       ``EdDSA`` (RFC 8037 section 3.1; RFC 8725 section 3.1); ``typ``, compared as a
       media type (:func:`media_type`), in ``allowed_typs`` (RFC 8725 section 3.11);
       ``kid`` 1 to 128 characters of
       ``[A-Za-z0-9_-]`` for which ``resolve_key`` returns a key;
    4. the signature: strict base64url, 64 bytes, verifying over the ASCII signing input;
    5. only then the payload: base64url (alphabet and length; its text is what was
       signed, so the canonical-encoding test has nothing left to protect), UTF-8, a
       JSON object without duplicate names at any depth.

    Claims are not validated here.

    Raises:
        JWSError: at the first failed step, with its reason.
    """
    return tuple.__new__(Decoded, decode_parts(token, resolve_key, allowed_typs, max_bytes))


def decode_parts(
    token: str,
    resolve_key: Callable[[str], nacl.signing.VerifyKey | None],
    allowed_typs: Container[str],
    max_bytes: int = MAX_TOKEN_BYTES,
) -> tuple[str, str, dict[str, Any]]:
    """:func:`decode`, every check the same, answering a plain ``(typ, kid, claims)``.

    For the offline verifier's first-seen path, where building a :class:`Decoded`
    costs more than it is worth.
    """
    first, last, header_seg, cached, typ, kid = _header_checked(token, allowed_typs, max_bytes)
    key = resolve_key(kid)
    if key is None:
        raise JWSError("unknown kid")
    raw = token.encode("ascii")
    _signature_checked(token, raw, last, key)
    _keep_header(header_seg, cached, typ, kid)
    return typ, kid, payload_object(_payload_bytes(raw, first, last))


def decode_parts_claimed(
    token: str,
    resolve_key: Callable[[str, dict[str, Any]], nacl.signing.VerifyKey | None],
    allowed_typs: Container[str],
    max_bytes: int = MAX_TOKEN_BYTES,
) -> tuple[str, str, dict[str, Any]]:
    """:func:`decode_parts` for a verifier that trusts several issuers, each with its own
    keys, where a token's claims say which issuer's keys may verify it.

    ``resolve_key`` is given the ``kid`` and the payload, parsed as :func:`decode` parses
    it but not yet verified: it may read the payload only to choose whose keys to look
    ``kid`` up in, and the caller must check the verified claims against that choice
    (a token naming one issuer and signed by another's key then fails the signature or
    that check). Every check of :func:`decode` is made, in its order, except that the
    payload's base64url and JSON are checked before the key is resolved (a malformed
    payload is refused for that, whatever its signature). The claims returned are the
    parsed ones; the signature covered their exact text, so nothing is parsed twice.

    Raises:
        JWSError: at the first failed step, with its reason.
    """
    first, last, header_seg, cached, typ, kid = _header_checked(token, allowed_typs, max_bytes)
    raw = token.encode("ascii")
    claims = payload_object(_payload_bytes(raw, first, last))
    key = resolve_key(kid, claims)
    if key is None:
        raise JWSError("unknown kid")
    _signature_checked(token, raw, last, key)
    _keep_header(header_seg, cached, typ, kid)
    return typ, kid, claims


def _header_checked(
    token: str, allowed_typs: Container[str], max_bytes: int
) -> tuple[int, int, str, tuple[str, str] | None, str, str]:
    """Steps 1 and 2 of :func:`decode` as ``_split`` makes them, without building the list
    of segments, then the header (from the cache of verified headers when it is there):
    the two dots' places, the header segment, its cache entry, ``typ`` and ``kid``."""
    if not isinstance(token, str):
        raise JWSError("token is not a string")
    if len(token) > max_bytes:
        raise JWSError("token too large")
    if not token.isascii():
        raise JWSError("token is not ASCII")
    first, last = token.find("."), token.rfind(".")
    if first == last or token.find(".", first + 1) != last:
        raise JWSError("token must have 3 segments")
    if first == 0 or last == first + 1 or last == len(token) - 1:
        raise JWSError("token has an empty segment")
    header_seg = token[:first]
    cached = _VERIFIED_HEADERS.get(header_seg)
    typ, kid = _parse_header(header_seg) if cached is None else cached
    if typ not in allowed_typs:
        typ = _allowed_spelling(typ, allowed_typs)
    return first, last, header_seg, cached, typ, kid


def _signature_checked(token: str, raw: bytes, last: int, key: nacl.signing.VerifyKey) -> None:
    """The signature segment decoded (canonically) and verified over the signing input."""
    signature = b64_span(raw, last, len(raw))
    rem = (len(raw) - last - 1) & 3
    if signature is None or (rem and raw[-1] not in CANONICAL_LAST_BYTE[rem]):
        signature = b64url_decode_checked(token[last + 1 :], "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise JWSError("signature length")
    if not _verify_token_signature(raw, last, signature, key):
        raise JWSError("bad signature")


def _keep_header(header_seg: str, cached: tuple[str, str] | None, typ: str, kid: str) -> None:
    """Remember a header whose token verified (a forged one never fills the cache)."""
    if cached is None:
        if len(_VERIFIED_HEADERS) >= _VERIFIED_HEADERS_MAX:
            _VERIFIED_HEADERS.clear()  # old kids and typs fall out after rotation
        _VERIFIED_HEADERS[header_seg] = (typ, kid)


def _payload_bytes(raw: bytes, first: int, last: int) -> bytes:
    """The payload segment's bytes. Its exact text is what the signature covers, and
    ``b64url_decode`` also insists on the canonical encoding so that no two texts decode
    to the same bytes; over a verified text that cannot matter, so only alphabet and
    length are checked (before verification too: a text that is not base64url is refused
    for that)."""
    payload = b64_span(raw, first, last)
    return signed_payload_checked(raw[first + 1 : last]) if payload is None else payload


def payload_object(payload: bytes) -> dict[str, Any]:
    """A token's payload bytes as :func:`decode` reads them: a JSON object without
    duplicate names at any depth. Raises JWSError."""
    claims = fast_json_object(payload)
    if claims is None:
        claims = json_object_strict(payload, "payload")
    return claims


def decode_unverified(
    token: str, *, max_bytes: int = MAX_TOKEN_BYTES
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(header, payload)`` WITHOUT checking the signature or the header's values.

    For inspection tools only (``tasklease token inspect``): nothing returned here may be
    trusted or used to authorize anything. The structure is still parsed strictly (size
    cap, three segments, strict base64url, JSON objects without duplicate names); the
    signature segment may be empty.

    Raises:
        JWSError: the token is not structurally a compact JWS with JSON header and payload.
    """
    header_seg, payload_seg, signature_seg = _split(token, max_bytes, allow_empty_signature=True)
    header = json_object(b64url_decode_for(header_seg, "header"), "header")
    payload = json_object(b64url_decode_for(payload_seg, "payload"), "payload")
    b64url_decode_for(signature_seg, "signature")
    return header, payload


def _split(
    token: str, max_bytes: int, *, allow_empty_signature: bool = False
) -> tuple[str, str, str]:
    if not isinstance(token, str):
        raise JWSError("token is not a string")
    # For ASCII text, characters are bytes; anything else is refused just below.
    if len(token) > max_bytes:
        raise JWSError("token too large")
    if not token.isascii():
        raise JWSError("token is not ASCII")
    segments = token.split(".")
    if len(segments) != 3:
        raise JWSError("token must have 3 segments")
    header_seg, payload_seg, signature_seg = segments
    if not (header_seg and payload_seg and (signature_seg or allow_empty_signature)):
        raise JWSError("token has an empty segment")
    return header_seg, payload_seg, signature_seg


def media_type(typ: str) -> str:
    """A ``typ`` header value as the media type it names, for comparison.

    RFC 7515 section 4.1.9: media type names compare without case (RFC 2045), and a
    ``typ`` without a ``/`` stands for ``application/<typ>``, so ``application/at+jwt``,
    ``AT+JWT`` and ``at+jwt`` are one type (RFC 9068 section 4). Returned in the short,
    lowercase form our allow-lists use.
    """
    lowered = typ.lower()
    return lowered[12:] if lowered.startswith("application/") else lowered


def _allowed_spelling(typ: str, allowed_typs: Container[str]) -> str:
    """The entry of ``allowed_typs`` naming the same media type as ``typ``, or refuse.

    Only for a ``typ`` not spelled exactly as allowed (``application/at+jwt``, ``AT+JWT``).
    """
    wanted = media_type(typ)
    if isinstance(allowed_typs, Iterable):
        for allowed in allowed_typs:
            if type(allowed) is str and media_type(allowed) == wanted:
                return allowed
    raise JWSError("typ not allowed")


# Header segment -> (typ, kid), for headers that came with a valid signature. Parsing is a
# pure function of the segment and saves ~3 us per token; only signed headers enter, so the
# entries are bounded by our kids times typs, and the cap only guards against surprises.
# typ and kid are still checked against the caller's allow-list and key ring every time.
_VERIFIED_HEADERS: dict[str, tuple[str, str]] = {}
_VERIFIED_HEADERS_MAX = 256


def _parse_header(segment: str) -> tuple[str, str]:
    header = json_object(b64url_decode_for(segment, "header"), "header")
    if not _ALLOWED_HEADER_PARAMS.issuperset(header):
        name = min(k for k in header if k not in _ALLOWED_HEADER_PARAMS)
        if _PRINTABLE_PARAM.fullmatch(name):
            raise JWSError(f"unexpected header parameter: {name}")
        raise JWSError("unexpected header parameter")
    if header.get("alg") != ALGORITHM:
        raise JWSError("alg not allowed")
    typ = header.get("typ")
    if type(typ) is not str:  # unhashable values must not reach `in allowed_typs`
        raise JWSError("typ missing or not a string")
    kid = header.get("kid")
    if type(kid) is not str or _KID.fullmatch(kid) is None:
        raise JWSError("kid malformed")
    return typ, kid


# -- detached Ed25519 (delegation records, agent challenge signatures) ---------------


def sign_detached(message: bytes, key: nacl.signing.SigningKey) -> bytes:
    """Ed25519 signature (64 bytes) over ``message`` (RFC 8032 section 5.1.6)."""
    signature: bytes = key.sign(message).signature
    return signature


# The token path calls libsodium's ``crypto_sign_open`` through PyNaCl's own binding.
# ``VerifyKey.verify`` makes the same call (same checks: canonical S, small-order keys)
# but first allocates and zero-fills two C buffers and then copies the message back out,
# ~1.3 us of a ~56 us verification; a verifier needs only the yes or no, and libsodium
# takes NULL for the message it would copy out. Without that binding, ``verify_detached``.
try:
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _sodium_open: Callable[..., int] | None = _lib.crypto_sign_open
    _NULL = _ffi.NULL
except (ImportError, AttributeError):  # pragma: no cover - every PyNaCl 1.x has both
    _sodium_open = None
_VERIFY_KEY = nacl.signing.VerifyKey


def _verify_token_signature(
    raw: bytes, length: int, signature: bytes, key: nacl.signing.VerifyKey
) -> bool:
    """:func:`verify_detached` of ``raw[:length]`` for the token path: the same answer.

    ``crypto_sign_open`` reads the signature and then exactly ``length`` bytes of ``raw``
    from one buffer, so the signing input is never sliced out of the token's bytes.
    """
    if (
        _sodium_open is not None
        and type(key) is _VERIFY_KEY
        and type(raw) is bytes
        and type(signature) is bytes
        and len(signature) == SIGNATURE_BYTES
        and 0 <= length <= len(raw)
    ):
        signed = signature + raw
        return _sodium_open(_NULL, _NULL, signed, SIGNATURE_BYTES + length, bytes(key)) == 0
    return verify_detached(raw[:length], signature, key)


def verify_raw(message: bytes, signature: bytes, public_key: bytes) -> bool:
    """:func:`verify_detached` with the key as its 32 raw bytes: the same answer (the same
    libsodium call), without building a ``VerifyKey`` per signature (offline chains name
    a new key in every block). Never raises."""
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        return False
    if type(public_key) is not bytes or len(public_key) != 32:
        return False
    if _sodium_open is not None and type(message) is bytes:
        return _sodium_open(_NULL, _NULL, signature + message, len(signature) + len(message),
                            public_key) == 0  # fmt: skip
    try:
        return verify_detached(message, signature, nacl.signing.VerifyKey(public_key))
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        return False


def verify_detached(message: bytes, signature: bytes, key: nacl.signing.VerifyKey) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``key``.

    libsodium refuses non-canonical signatures and small-order keys (RFC 8032 section
    5.1.7). Never raises: a signature of the wrong type or length, or a key that is not a
    ``VerifyKey``, is simply invalid.
    """
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        return False
    if not isinstance(key, nacl.signing.VerifyKey):
        return False
    try:
        key.verify(message, signature)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        return False
    return True


# -- JWS signed by the key in its own header (DPoP proofs, RFC 9449 section 4.2) ----------

_EMBEDDED_HEADER_PARAMS = frozenset(("typ", "alg", "jwk"))
_OKP_MEMBERS = frozenset(("kty", "crv", "x"))
MAX_PROOF_BYTES = 2048


def decode_embedded_key(
    token: str, *, typ: str, max_bytes: int = MAX_PROOF_BYTES
) -> tuple[bytes, dict[str, Any]]:
    """Verify a compact JWS signed by the Ed25519 key in its own ``jwk`` header.

    For DPoP proofs only: the header is exactly ``typ`` (equal to ``typ``), ``alg``
    (``EdDSA``) and ``jwk`` (``kty: OKP``, ``crv: Ed25519``, ``x``, no private member),
    the size cap comes first and the payload is parsed only after the signature verifies.
    Returns ``(raw 32-byte public key, claims)``. The caller decides whether that key is
    the one the access token is bound to.

    Raises:
        JWSError: at the first failed step, with its reason.
    """
    header_seg, payload_seg, signature_seg = _split(token, max_bytes)
    header = json_object(b64url_decode_for(header_seg, "header"), "header")
    if set(header) != _EMBEDDED_HEADER_PARAMS:
        raise JWSError("proof header must be exactly typ, alg and jwk")
    if type(header["typ"]) is not str or media_type(header["typ"]) != media_type(typ):
        raise JWSError("typ not allowed")
    if header["alg"] != ALGORITHM:
        raise JWSError("alg not allowed")
    jwk = header["jwk"]
    if type(jwk) is not dict or set(jwk) != _OKP_MEMBERS:
        raise JWSError("proof jwk must be exactly kty, crv and x")
    if jwk["kty"] != "OKP" or jwk["crv"] != "Ed25519" or type(jwk["x"]) is not str:
        raise JWSError("proof jwk is not an Ed25519 public key")
    raw_key = b64url_decode_for(jwk["x"], "jwk x")
    if len(raw_key) != 32:
        raise JWSError("proof jwk x length")
    try:
        key = nacl.signing.VerifyKey(raw_key)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise JWSError("proof jwk is not an Ed25519 public key") from None
    signature = b64url_decode_for(signature_seg, "signature")
    signing_input = token[: len(header_seg) + 1 + len(payload_seg)].encode("ascii")
    if not verify_detached(signing_input, signature, key):
        raise JWSError("bad signature")
    claims = json_object(b64url_decode_for(payload_seg, "payload"), "payload")
    return raw_key, claims


# -- JWS signed by a key the verifier holds (client assertions, RFC 7523 section 2.2) ----

_KNOWN_KEY_HEADER_PARAMS = frozenset(("alg", "typ", "kid"))
KNOWN_KEY_ALGORITHMS = ("EdDSA", "Ed25519")
"""The ``alg`` values :func:`decode_with_key` accepts: RFC 8037's ``EdDSA`` and RFC
9864's fully specified ``Ed25519``, both Ed25519 signatures; never ``none`` or ``HS*``."""


def decode_with_key(
    token: str,
    key: nacl.signing.VerifyKey | Callable[[bytes, bytes], bool],
    *,
    typs: Container[str],
    max_bytes: int = MAX_PROOF_BYTES,
) -> dict[str, Any]:
    """Verify a compact JWS signed by ``key`` (one the verifier holds); return its claims.

    ``key`` is the key, or what checks a signature: ``key(signing_input, signature)``,
    true iff it is valid (``core.identity.verify_signed``'s rule for a name with no key).

    For JWTs made by clients' own libraries (RFC 7523 client assertions): the header has
    ``alg`` (one of :data:`KNOWN_KEY_ALGORITHMS`) and optionally ``typ`` (its media type
    in ``typs``) and ``kid`` (any well-formed value: there is one key), and nothing else,
    so no parameter can point to another key (``jwk``, ``jku``, ``x5c``...) or change
    processing (``crit``, ``b64``). The size cap comes first and the payload is parsed
    only after the signature verifies. Claims are not validated here.

    Raises:
        JWSError: at the first failed step, with its reason.
    """
    header_seg, payload_seg, signature_seg = _split(token, max_bytes)
    header = json_object(b64url_decode_for(header_seg, "header"), "header")
    if not _KNOWN_KEY_HEADER_PARAMS.issuperset(header):
        name = min(k for k in header if k not in _KNOWN_KEY_HEADER_PARAMS)
        if _PRINTABLE_PARAM.fullmatch(name):
            raise JWSError(f"unexpected header parameter: {name}")
        raise JWSError("unexpected header parameter")
    if header.get("alg") not in KNOWN_KEY_ALGORITHMS:
        raise JWSError("alg not allowed")
    typ = header.get("typ")
    if typ is not None and (type(typ) is not str or media_type(typ) not in typs):
        raise JWSError("typ not allowed")
    kid = header.get("kid")
    if kid is not None and (type(kid) is not str or not 1 <= len(kid) <= MAX_KID_CHARS):
        raise JWSError("kid malformed")
    signature = b64url_decode_for(signature_seg, "signature")
    signing_input = token[: len(header_seg) + 1 + len(payload_seg)].encode("ascii")
    if isinstance(key, nacl.signing.VerifyKey):
        valid = verify_detached(signing_input, signature, key)
    else:
        valid = key(signing_input, signature)
    if not valid:
        raise JWSError("bad signature")
    return json_object(b64url_decode_for(payload_seg, "payload"), "payload")


# -- JWK thumbprints (RFC 7638) -------------------------------------------------------


def jwk_thumbprint(public_key: bytes) -> str:
    """RFC 7638 JWK SHA-256 thumbprint of an Ed25519 public key (RFC 8037 section 2).

    SHA-256 over the exact ASCII ``{"crv":"Ed25519","kty":"OKP","x":"<base64url(key)>"}``
    (required members only, in lexicographic order, no whitespace), base64url without
    padding: 43 characters. Key ids (``kid``) and DPoP key bindings (``cnf.jkt``) are
    these thumbprints.

    Raises:
        ValueError: ``public_key`` is not 32 bytes.
    """
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    member_x = b64url_encode(bytes(public_key))
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + member_x + '"}'
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())
