"""DPoP proofs (RFC 9449 section 4.2), signed by the key their own header names: the
signature, the header profile and the key type are each checked."""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
import pytest

from tasklease.rules import jws
from tasklease.rules.binding import DPoPProofError, DPoPVerifier
from tasklease.rules.jws import JWSError, b64url_encode

KEY = nacl.signing.SigningKey(b"e" * 32)
OTHER = nacl.signing.SigningKey(b"f" * 32)
PROOF_TYP = "dpop+jwt"


def _compact(obj: Any) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


def signed(header: dict[str, Any], claims: dict[str, Any], key: nacl.signing.SigningKey) -> str:
    signing_input = f"{_compact(header)}.{_compact(claims)}"
    signature = jws.sign_detached(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url_encode(signature)}"


def _jwk(**overrides: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(bytes(KEY.verify_key)),
    }
    jwk.update(overrides)
    return jwk


def _proof(key: nacl.signing.SigningKey = KEY, **header: Any) -> str:
    full: dict[str, Any] = {"typ": PROOF_TYP, "alg": "EdDSA", "jwk": _jwk()}
    full.update(header)
    return signed(full, {"jti": "j1", "htm": "POST"}, key)


def test_a_proof_signed_by_its_header_key_verifies() -> None:
    raw, claims = jws.decode_embedded_key(_proof(), typ=PROOF_TYP)
    assert raw == bytes(KEY.verify_key)
    assert claims == {"jti": "j1", "htm": "POST"}


@pytest.mark.parametrize(
    "jwk", [_jwk(kty="EC"), _jwk(kty="oct"), _jwk(crv="X25519"), _jwk(crv="Ed448")]
)
def test_a_proof_key_must_be_an_okp_ed25519_key(jwk: dict[str, Any]) -> None:
    """Every member of the proof's ``jwk`` is checked, not just the 32 bytes of ``x``."""
    with pytest.raises(JWSError) as info:
        jws.decode_embedded_key(_proof(jwk=jwk), typ=PROOF_TYP)
    assert info.value.reason == "proof jwk is not an Ed25519 public key"


def test_a_proof_signed_by_another_key_than_its_header_names_is_refused() -> None:
    with pytest.raises(JWSError) as info:
        jws.decode_embedded_key(_proof(OTHER), typ=PROOF_TYP)
    assert info.value.reason == "bad signature"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "Ed448"}, "alg not allowed"),
        ({"alg": "none"}, "alg not allowed"),
        ({"typ": "JWT"}, "typ not allowed"),
        ({"typ": "at+jwt"}, "typ not allowed"),
        ({"kid": "k1"}, "proof header must be exactly typ, alg and jwk"),
        ({"jwk": {**_jwk(), "kid": "k1"}}, "proof jwk must be exactly kty, crv and x"),
    ],
)
def test_a_proof_header_is_exactly_the_dpop_profile(header: dict[str, Any], reason: str) -> None:
    with pytest.raises(JWSError) as info:
        jws.decode_embedded_key(_proof(**header), typ=PROOF_TYP)
    assert info.value.reason == reason


def test_a_proof_naming_the_holders_key_but_signed_by_another_is_refused() -> None:
    """The holder's public key is no secret (``agent_jwk``): a proof made without its
    private key fails on its signature, whatever its header and claims say."""
    url, now = "https://broker.example/v1/token/renew", 1_800_000_000
    claims = {"jti": "forged-1", "htm": "POST", "htu": url, "iat": now}
    header = {"typ": PROOF_TYP, "alg": "EdDSA", "jwk": _jwk()}
    holder = jws.jwk_thumbprint(bytes(KEY.verify_key))
    dpop = DPoPVerifier(60)
    with pytest.raises(DPoPProofError) as info:
        dpop.verify(signed(header, claims, OTHER), htm="POST", htu=url, now=now, jkt=holder)
    assert "bad signature" in info.value.reason
    assert dpop.verify(signed(header, claims, KEY), htm="POST", htu=url, now=now) == holder


def test_a_proof_is_refused_past_its_size_cap_and_for_a_typ_that_is_no_string() -> None:
    big = signed(
        {"typ": PROOF_TYP, "alg": "EdDSA", "jwk": _jwk()}, {"jti": "j" * 2000, "htm": "POST"}, KEY
    )
    assert len(big) > jws.MAX_PROOF_BYTES
    with pytest.raises(JWSError) as info:
        jws.decode_embedded_key(big, typ=PROOF_TYP)
    assert info.value.reason == "token too large"
    assert jws.decode_embedded_key(big, typ=PROOF_TYP, max_bytes=len(big))[0] == bytes(
        KEY.verify_key
    )
    with pytest.raises(JWSError) as info:
        jws.decode_embedded_key(_proof(typ=5), typ=PROOF_TYP)
    assert info.value.reason == "typ not allowed"
