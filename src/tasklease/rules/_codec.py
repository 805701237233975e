"""The byte formats inside a compact JWS: strict base64url and strict JSON objects.

Part of the hazmat below ``rules.jws``, which re-exports :class:`JWSError`,
:func:`b64url_encode` and :func:`b64url_decode`. Each format has a fast path and a checked
one: the fast path answers when it accepts; anything it refuses goes to the checked path,
which decides and gives the reason. Both raise :class:`JWSError`.
"""

from __future__ import annotations

import binascii
import json
import math
from collections.abc import Callable
from typing import Any

try:
    import msgspec
except ImportError:  # pragma: no cover - tests/rules runs this without msgspec
    msgspec = None  # type: ignore[assignment]  # see fast_json_object

__all__ = [
    "CANONICAL_LAST_BYTE",
    "JWSError",
    "b64_span",
    "b64_span_binascii",
    "b64url_decode",
    "b64url_decode_checked",
    "b64url_decode_for",
    "b64url_encode",
    "fast_json_object",
    "json_object",
    "json_object_strict",
    "signed_payload_checked",
]

_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_STD_TO_URL = bytes.maketrans(b"+/", b"-_")
_PADDING = (b"", b"", b"==", b"=")
# With 2 (or 3) characters in the last quantum, the last character carries 4 (or 2) bits
# that encode nothing; they must be zero (RFC 4648 section 3.5). Only these characters
# satisfy that, so each byte string has exactly one accepted encoding.
_CANONICAL_LAST_CHAR: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset(),
    frozenset("AQgw"),
    frozenset("AEIMQUYcgkosw048"),
)


class JWSError(Exception):
    """A token (or base64url text) was refused.

    ``reason`` says precisely why (for example ``"alg not allowed"``, ``"unknown kid"``,
    ``"bad signature"``). It is for the audit log and debug logs only: callers answer
    with one generic failure, whatever the reason.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# -- base64url (RFC 7515 section 2, RFC 4648 section 5) ------------------------------


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return binascii.b2a_base64(data, newline=False).translate(_STD_TO_URL).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Strict base64url decoding (RFC 7515 section 2, RFC 4648 sections 3.5 and 5).

    Accepts only ``[A-Za-z0-9_-]``, no ``=`` padding, no length that is 1 modulo 4, and
    only the canonical encoding (unused trailing bits zero), so that no two strings decode
    to the same bytes. The empty string decodes to ``b""``.

    Raises:
        JWSError: the text is not strict, canonical base64url.
    """
    return b64url_decode_for(text, "base64url")


def b64url_decode_for(text: str, what: str) -> bytes:
    if type(text) is str and text.isascii():
        raw = b"." + text.encode("ascii")
        decoded = b64_span(raw, 0, len(raw))
        if decoded is not None:
            rem = (len(raw) - 1) & 3
            if not rem or raw[-1] in CANONICAL_LAST_BYTE[rem]:
                return decoded
    return b64url_decode_checked(text, what)


def b64url_decode_checked(text: str, what: str) -> bytes:
    """:func:`b64url_decode_for` one rule at a time: the reference, and the reason for a refusal.

    :func:`b64url_decode_for` answers from :func:`b64_span` when that accepts the text and
    the last character is canonical; anything else comes here, which decides.
    """
    try:
        raw = text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise JWSError(f"{what}: not ASCII text") from None
    if raw.translate(None, _B64URL_ALPHABET):
        raise JWSError(f"{what}: invalid base64url character")
    rem = len(raw) % 4
    if rem == 1:
        raise JWSError(f"{what}: invalid base64url length")
    if rem and text[-1] not in _CANONICAL_LAST_CHAR[rem]:
        raise JWSError(f"{what}: non-canonical base64url")
    # The alphabet is checked above, so the lenient decoder sees only valid input.
    return binascii.a2b_base64(raw.translate(_URL_TO_STD) + _PADDING[rem])


# The fast decoders. One translate maps the base64url alphabet onto the standard one and
# every other byte (``+``, ``/`` and ``=`` included) to ``!``, which no strict decoder
# accepts; the padding is ours, chosen from the length. So a strict standard decoder
# accepts exactly the strict base64url texts of a valid length, and decodes them to the
# same bytes. (Canonical last characters are the caller's to check.)
#
# ``b64_span(raw, sep, end)`` decodes ``raw[sep + 1 : end]``, where ``raw[sep]`` is the
# separator before the segment (``.`` in a token): with msgspec, the same translate turns
# that separator into the opening quote of a JSON string that msgspec decodes as base64
# (three times faster than binascii). Its table maps only the separator to ``"``: any
# ``.`` inside the segment ends the string early, and msgspec refuses the trailing text.
# Both return None for anything they refuse; callers then ask the checked path, which
# gives the reason. tests/rules/test_jws.py holds both to the same answers as the checked
# path.
_STD_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_REFUSED = ord("!")
_URL_TO_STRICT = bytes(
    _STD_ALPHABET[_B64URL_ALPHABET.index(b)] if b in _B64URL_ALPHABET else _REFUSED
    for b in range(256)
)
_SEP_URL_TO_QUOTED = bytes(ord('"') if b == ord(".") else _URL_TO_STRICT[b] for b in range(256))
_QUOTED_PADDING = (b'"', b"", b'=="', b'="')
CANONICAL_LAST_BYTE: tuple[frozenset[int], ...] = tuple(
    frozenset(map(ord, chars)) for chars in _CANONICAL_LAST_CHAR
)


def b64_span_binascii(raw: bytes, sep: int, end: int) -> bytes | None:
    """``raw[sep + 1 : end]`` decoded as strict base64url, or None (binascii strict mode)."""
    rem = (end - sep - 1) & 3
    if rem == 1:
        return None
    try:
        return binascii.a2b_base64(
            raw[sep + 1 : end].translate(_URL_TO_STRICT) + _PADDING[rem], strict_mode=True
        )
    except binascii.Error:
        return None


b64_span: Callable[[bytes, int, int], bytes | None] = b64_span_binascii


def signed_payload_checked(segment: bytes) -> bytes:
    """The payload decoding of :func:`tasklease.rules.jws.decode` one rule at a time (the
    reason for a refusal).

    Alphabet and length only, not the canonical encoding: see that function.
    """
    rem = len(segment) % 4
    if segment.translate(None, _B64URL_ALPHABET):
        raise JWSError("payload: invalid base64url character")
    if rem == 1:
        raise JWSError("payload: invalid base64url length")
    return binascii.a2b_base64(segment.translate(_URL_TO_STD) + _PADDING[rem])


# -- strict JSON (RFC 8259; RFC 7515 section 5.2 step 4 on duplicate names) ----------


class _DuplicateKeyError(Exception):
    """An object names a member twice; ``args[0]`` is the name."""


class _BadNumberError(Exception):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateKeyError(name)
            seen.add(name)
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf: not a JSON number we can keep
        raise _BadNumberError
    return value


def _no_constant(_text: str) -> Any:
    raise _BadNumberError  # NaN, Infinity, -Infinity are not JSON


# One decoder, built once: json.loads(..., object_pairs_hook=...) builds a new decoder per
# call, which costs more than the parse of a token's claims.
_JSON = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_float=_finite_float,
    parse_constant=_no_constant,
)


# The fast path: msgspec decodes, re-encodes, and the bytes must come back identical. If
# they do, the text is the encoding of a dict, so no object in it can repeat a name, and
# it is valid UTF-8 without lone surrogates or non-finite numbers. Anything else (other
# spacing, escapes or number spellings, or invalid input) takes the strict stdlib path,
# which also gives the precise reason for a refusal.
#
# msgspec is optional here: the offline verifier (``tasklease.verify``) runs where only
# PyNaCl is installed, and there every object takes the strict stdlib path (same answers).
def _no_fast_path(_data: bytes) -> dict[str, Any] | None:
    return None


fast_json_object: Callable[[bytes], dict[str, Any] | None] = _no_fast_path
if msgspec is not None:
    _FAST_DECODER = msgspec.json.Decoder()
    _FAST_ENCODER = msgspec.json.Encoder()
    _BASE64_DECODER = msgspec.json.Decoder(bytes)
    _MSGSPEC_ERROR = msgspec.MsgspecError

    def _msgspec_json_object(data: bytes) -> dict[str, Any] | None:
        try:
            value = _FAST_DECODER.decode(data)
            if type(value) is dict and _FAST_ENCODER.encode(value) == data:
                return value
        except (_MSGSPEC_ERROR, ValueError, RecursionError):
            pass
        return None

    def b64_span_msgspec(raw: bytes, sep: int, end: int) -> bytes | None:
        """:func:`b64_span_binascii`, decoded by msgspec as a JSON string of base64."""
        rem = (end - sep - 1) & 3
        if rem == 1:
            return None
        try:
            decoded: bytes = _BASE64_DECODER.decode(
                raw[sep:end].translate(_SEP_URL_TO_QUOTED) + _QUOTED_PADDING[rem]
            )
        except _MSGSPEC_ERROR:
            return None
        return decoded

    fast_json_object = _msgspec_json_object
    b64_span = b64_span_msgspec


def json_object(data: bytes, what: str) -> dict[str, Any]:
    value = fast_json_object(data)
    if value is not None:
        return value
    return json_object_strict(data, what)


def json_object_strict(data: bytes, what: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")  # strict: no other encoding is sniffed (RFC 7515 s. 5.2)
    except UnicodeDecodeError:
        raise JWSError(f"{what}: not UTF-8") from None
    try:
        value = _JSON.decode(text)
    except _DuplicateKeyError:
        raise JWSError(f"duplicate key in {what}") from None
    except _BadNumberError:
        raise JWSError(f"{what}: number out of range") from None
    except RecursionError:
        raise JWSError(f"{what}: nested too deeply") from None
    except ValueError:  # JSONDecodeError, and int() refusing more than 4300 digits
        raise JWSError(f"{what}: invalid JSON") from None
    if type(value) is not dict:
        raise JWSError(f"{what}: not a JSON object")
    if "\\u" in text and not _encodes_as_utf8(value):
        # An escaped lone surrogate ("\ud800") decodes to a str that is not Unicode text.
        raise JWSError(f"{what}: not UTF-8")
    return value


def _encodes_as_utf8(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
