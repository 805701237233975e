"""JSON that parsers may read differently or not at all: objects that give a member name
twice (RFC 8259 section 4) and nesting deep enough to exhaust a decoder's stack, found
before decoding so that a reader which must agree with every other parser of the same
bytes can refuse them; and :func:`strict_json`, which reads JSON text only when neither
is there.

Standard library only, like the rest of ``tasklease.rules``.
"""

from __future__ import annotations

import json
from typing import Any

from tasklease.rules._codec import (
    _JSON,
    _BadNumberError,
    _DuplicateKeyError,
    _encodes_as_utf8,
    _object_without_duplicates,
)

__all__ = [
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_DEPTH",
    "JSONTextError",
    "json_nesting_error",
    "repeated_name",
    "strict_json",
]

# Names only: numbers and constants are the caller's decoder's to judge.
_PAIRS = json.JSONDecoder(object_pairs_hook=_object_without_duplicates)


def repeated_name(data: bytes) -> str | None:
    """The first member name that an object of the JSON text ``data`` repeats, or
    ``None``. RFC 8259 section 4 leaves such an object's meaning to each parser (most keep
    the last value, some the first), so a reader that must agree with every other one
    refuses it. ``None`` too for text that is not JSON: its own decoder answers that.
    Nesting must be bounded before (:func:`json_nesting_error`)."""
    try:
        _PAIRS.decode(data.decode("utf-8"))
    except _DuplicateKeyError as exc:
        return str(exc.args[0])
    except (ValueError, RecursionError):  # not UTF-8 or not JSON
        return None
    return None


MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have (ours need 3)."""

MAX_JSON_CONTAINERS = 16384
"""Most arrays and objects a request body may hold outside its strings (a large one of
ours, a hundred offline reports or a federation's scope map, holds a few thousand): what
the depth check and the checks after it cost is bounded by it, not only by the body's
size."""

# Brackets only, both kinds as one: "(" opens, ")" closes (a decoder stops at a mismatched
# pair, so treating them alike can only over-estimate how deep it would go).
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _outside_strings(body: bytes) -> bytes:
    """``body`` without its JSON strings (to the end of the input if one is never closed).

    Escapes go first: pairs of backslashes, then escaped quotes (pairing left to right, as a
    decoder reads them; a backslash outside a string stops a decoder, so what this does
    after one does not matter). What is left between quotes is string.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def json_nesting_error(body: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``body`` must not reach a JSON decoder, or ``None``.

    ``body`` is refused when a decoder reading it would go more than ``limit`` arrays or
    objects deep, or when it opens more than :data:`MAX_JSON_CONTAINERS` of them (brackets
    inside strings do not count). Invalid JSON that stays shallow is left for the decoder,
    which gives its own answer. A few C-level byte operations over the body, then at most
    ``limit`` passes over its brackets alone, so a megabyte costs a few milliseconds.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return None  # fewer openers than levels: every ordinary request ends here
    deep = f"malformed JSON body: nested deeper than {limit} levels"
    skeleton = _outside_strings(body).translate(_BRACKETS, _NOT_BRACKETS)
    if skeleton.count(b"(") > MAX_JSON_CONTAINERS:
        return f"malformed JSON body: more than {MAX_JSON_CONTAINERS} arrays and objects"
    too_many_openers = b"(" * (limit + 1)
    rounds = 0
    # Each pass removes the innermost pairs, so the nesting of what is matched drops by
    # one a pass: still pairs after ``limit`` passes means deeper than ``limit``.
    while b"()" in skeleton:
        if rounds == limit or too_many_openers in skeleton:
            return deep
        skeleton = skeleton.replace(b"()", b"")
        rounds += 1
    # Left: unmatched brackets, ")" * a + "(" * b. A decoder stops at the first excess
    # ")", before which everything was matched (at most ``rounds`` deep); without one it
    # reads the b unclosed levels around the matched ones.
    closers = len(skeleton) - len(skeleton.lstrip(b")"))
    openers = len(skeleton) - closers
    if closers == 0 and openers + rounds > limit:
        return deep
    return None


class JSONTextError(ValueError):
    """JSON text refused by :func:`strict_json`; the message says why, naming the field."""


def strict_json(text: str, what: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """The value of the JSON text ``text`` (a field that carries JSON as text: a form's
    ``authorization_details``, a JWK given as a string), read as strictly as a request
    body: refused when it nests deeper than ``limit``, repeats a member name, holds a
    number that is not finite or is not JSON at all. ``what`` names the field in the
    message of the :class:`JSONTextError` raised."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONTextError(f"{what}: not UTF-8") from None
    if json_nesting_error(data, limit) is not None:
        raise JSONTextError(f"{what}: nested deeper than {limit} levels")
    repeated = repeated_name(data)
    if repeated is not None:
        shown = f"`{repeated}`" if len(repeated) <= 64 and repeated.isprintable() else "a name"
        raise JSONTextError(f"{what}: {shown} is given twice in one object")
    try:
        value = _JSON.decode(text)
    except _BadNumberError:
        raise JSONTextError(f"{what}: number out of range") from None
    except (ValueError, RecursionError):
        raise JSONTextError(f"{what}: invalid JSON") from None
    if "\\u" in text and not _encodes_as_utf8(value):
        raise JSONTextError(f"{what}: not UTF-8")  # an escaped lone surrogate
    return value
