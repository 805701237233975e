"""The cache of verified headers takes a header only from a token whose signature
verified: forged tokens, however they spell a valid header, never enter or churn it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest

from tasklease.rules import jws
from tasklease.rules.jws import JWSError, b64url_encode

KEY = nacl.signing.SigningKey(b"i" * 32)
TYPS = frozenset({"JWT"})


def _resolve(kid: str) -> nacl.signing.VerifyKey | None:
    return KEY.verify_key if kid == "cache-k" else None


def _decode(token: str) -> Any:
    return jws.decode(token, resolve_key=_resolve, allowed_typs=TYPS).claims


def _decode_claimed(token: str) -> Any:
    return jws.decode_parts_claimed(token, lambda kid, _claims: _resolve(kid), TYPS)[2]


@pytest.mark.parametrize(("decoder", "spaces"), [(_decode, 2), (_decode_claimed, 3)])
def test_a_header_that_came_with_a_bad_signature_is_not_remembered(
    decoder: Callable[[str], Any], spaces: int
) -> None:
    # A spelling of a valid header that no token signed here uses.
    gap = " " * spaces
    header = b64url_encode(f'{{"alg":"EdDSA",{gap}"typ":"JWT",{gap}"kid":"cache-k"}}'.encode())
    payload = b64url_encode(b'{"sub":"a"}')
    forged = f"{header}.{payload}.{b64url_encode(bytes(64))}"
    for _ in range(2):
        with pytest.raises(JWSError) as info:
            decoder(forged)
        assert info.value.reason == "bad signature"
        assert header not in jws._VERIFIED_HEADERS
    signing_input = f"{header}.{payload}"
    signature = jws.sign_detached(signing_input.encode("ascii"), KEY)
    assert decoder(f"{signing_input}.{b64url_encode(signature)}") == {"sub": "a"}
    assert jws._VERIFIED_HEADERS[header] == ("JWT", "cache-k")
