"""JWS signed by a key the verifier holds (client assertions, RFC 7523) and raw Ed25519
signatures (offline chain blocks): the header and length checks that hold even when the
signature is good."""

from __future__ import annotations

from typing import Any

import nacl.signing
import pytest
from tests.rules.test_jws_edges import signed as _signed

from tasklease.rules import jws
from tasklease.rules.jws import JWSError, b64url_encode

KEY = nacl.signing.SigningKey(b"g" * 32)
OTHER = nacl.signing.SigningKey(b"h" * 32)


def _jwk() -> dict[str, Any]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(KEY.verify_key))}


# -- client assertions: decode_with_key ---------------------------------------------------

ASSERTION_TYPS = frozenset(("jwt", "client-authentication+jwt"))
ASSERTION = {"iss": "app-1", "sub": "app-1", "jti": "a1"}


def _assertion(key: nacl.signing.SigningKey = KEY, **header: Any) -> str:
    full: dict[str, Any] = {"alg": "EdDSA", "typ": "JWT", "kid": "app-key"}
    full.update(header)
    return _signed({k: v for k, v in full.items() if v is not None}, ASSERTION, key)


def test_an_assertion_signed_by_the_held_key_verifies() -> None:
    for header in ({}, {"alg": "Ed25519"}, {"typ": None, "kid": None}):
        claims = jws.decode_with_key(_assertion(**header), KEY.verify_key, typs=ASSERTION_TYPS)
        assert claims == ASSERTION


def test_an_assertion_signed_by_another_key_is_refused() -> None:
    with pytest.raises(JWSError) as info:
        jws.decode_with_key(_assertion(OTHER), KEY.verify_key, typs=ASSERTION_TYPS)
    assert info.value.reason == "bad signature"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "none"}, "alg not allowed"),
        ({"alg": "HS256"}, "alg not allowed"),
        ({"alg": None}, "alg not allowed"),
        ({"typ": "at+jwt"}, "typ not allowed"),
        ({"typ": "dpop+jwt"}, "typ not allowed"),
        ({"kid": ""}, "kid malformed"),
        ({"kid": "k" * 129}, "kid malformed"),
        ({"kid": 7}, "kid malformed"),
        ({"jwk": _jwk()}, "unexpected header parameter: jwk"),
        ({"jku": "https://attacker.example/jwks"}, "unexpected header parameter: jku"),
        ({"crit": ["b64"]}, "unexpected header parameter: crit"),
    ],
)
def test_an_assertion_header_names_only_alg_typ_and_kid(
    header: dict[str, Any], reason: str
) -> None:
    """Signed by the held key, still refused: the header may not name another key,
    another algorithm or another kind of token."""
    with pytest.raises(JWSError) as info:
        jws.decode_with_key(_assertion(**header), KEY.verify_key, typs=ASSERTION_TYPS)
    assert info.value.reason == reason


# -- raw signatures: verify_raw -------------------------------------------------------


def test_verify_raw_takes_only_a_64_byte_signature_and_a_32_byte_key() -> None:
    """libsodium reads the signature and the message from one buffer, and the key's
    first 32 bytes: a short signature would borrow the message's first byte, a long key
    would be read as its prefix. Both are refused, though either would verify."""
    message = b"an offline chain block"
    signature = jws.sign_detached(message, KEY)
    public = bytes(KEY.verify_key)
    assert jws.verify_raw(message, signature, public)
    assert not jws.verify_raw(signature[63:] + message, signature[:63], public)
    assert not jws.verify_raw(message, signature, public + b"\x00")


def test_an_assertion_is_refused_past_its_size_cap_and_for_a_typ_that_is_no_string() -> None:
    big = _signed({"alg": "EdDSA"}, {**ASSERTION, "pad": "p" * 2000}, KEY)
    assert len(big) > 2048
    with pytest.raises(JWSError) as info:
        jws.decode_with_key(big, KEY.verify_key, typs=ASSERTION_TYPS)
    assert info.value.reason == "token too large"
    assert jws.decode_with_key(big, KEY.verify_key, typs=ASSERTION_TYPS, max_bytes=len(big))
    with pytest.raises(JWSError) as info:
        jws.decode_with_key(_assertion(typ=5), KEY.verify_key, typs=ASSERTION_TYPS)
    assert info.value.reason == "typ not allowed"
