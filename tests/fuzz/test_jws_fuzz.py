"""The JWS codec (rules/jws.py) under arbitrary input: whatever it is given, it answers or
raises JWSError, never anything else; and what it encodes, it decodes unchanged.

Hostile inputs come in three kinds: arbitrary text; tokens that are structurally compact
JWS but carry arbitrary headers and payloads (signed, so the checks behind the
signature are reached too); and valid tokens mutated a character at a time.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import nacl.signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasklease.rules import jws
from tasklease.rules.jws import JWSError

KEY = nacl.signing.SigningKey(b"\x07" * 32)
KID = "fuzz-kid"
TYPS = frozenset({"at+jwt", "JWT"})
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _resolve(kid: str) -> nacl.signing.VerifyKey | None:
    return KEY.verify_key if kid == KID else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signed(header: bytes, payload: bytes) -> str:
    """A compact JWS over any header and payload bytes, correctly signed."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = KEY.sign(signing_input.encode("ascii")).signature
    return f"{signing_input}.{_b64(signature)}"


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_json_objects = st.dictionaries(st.text(max_size=10), _json, max_size=6)


def _decode_all_ways(token: Any) -> None:
    """Every entry point that takes untrusted token text; only JWSError may escape."""
    for call in (
        lambda: jws.decode(token, resolve_key=_resolve, allowed_typs=TYPS),
        lambda: jws.decode_parts(token, _resolve, TYPS),
        lambda: jws.decode_unverified(token),
        lambda: jws.decode_embedded_key(token, typ="dpop+jwt"),
    ):
        with contextlib.suppress(JWSError):
            call()


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_raises_only_jwserror(token: str) -> None:
    _decode_all_ways(token)
    with contextlib.suppress(JWSError):
        jws.b64url_decode(token)


@FUZZ
@given(
    header=_json_objects | _json.map(lambda v: {"alg": "EdDSA", "typ": "JWT", "kid": v}),
    payload=_json | st.binary(max_size=64).map(lambda b: {"raw": b.hex()}),
    header_raw=st.none() | st.binary(max_size=64),
    payload_raw=st.none() | st.binary(max_size=64),
)
def test_signed_arbitrary_headers_and_payloads_raise_only_jwserror(
    header: Any, payload: Any, header_raw: bytes | None, payload_raw: bytes | None
) -> None:
    """Header and payload bytes of any JSON (or none at all), behind a valid signature."""
    header_bytes = header_raw if header_raw is not None else json.dumps(header).encode()
    payload_bytes = payload_raw if payload_raw is not None else json.dumps(payload).encode()
    _decode_all_ways(_signed(header_bytes, payload_bytes))
    # And with the header the codec accepts, so the payload checks are reached.
    good_header = json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": KID}).encode()
    _decode_all_ways(_signed(good_header, payload_bytes))


@FUZZ
@given(
    claims=_json_objects,
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0), st.sampled_from(["drop", "set", "insert"]), st.characters()
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_tokens_raise_only_jwserror(claims: dict[str, Any], edits: list[Any]) -> None:
    token = list(jws.encode(json.dumps(claims).encode(), typ="JWT", kid=KID, key=KEY))
    for position, kind, char in edits:
        index = position % (len(token) + 1)
        if kind == "insert":
            token.insert(index, char)
        elif token:
            index %= len(token)
            if kind == "drop":
                del token[index]
            else:
                token[index] = char
    _decode_all_ways("".join(token))


@FUZZ
@given(claims=_json_objects, typ=st.sampled_from(sorted(TYPS)), compact=st.booleans())
def test_what_is_encoded_decodes_unchanged(claims: dict[str, Any], typ: str, compact: bool) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    payload = json.dumps(claims, separators=separators).encode()
    token = jws.encode(payload, typ=typ, kid=KID, key=KEY)
    decoded = jws.decode(token, resolve_key=_resolve, allowed_typs=TYPS)
    assert decoded == (typ, KID, claims)
    assert jws.decode_unverified(token) == ({"alg": "EdDSA", "typ": typ, "kid": KID}, claims)


@FUZZ
@given(st.binary(max_size=200))
def test_base64url_round_trips(data: bytes) -> None:
    text = jws.b64url_encode(data)
    assert "=" not in text
    assert jws.b64url_decode(text) == data
