"""Edges of the DPoP proof checks (RFC 9449 section 4.3) that every verifier applies."""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
import pytest

from tasklease.rules import jws
from tasklease.rules.binding import (
    BindingError,
    DPoPVerifier,
    normalize_htu,
)

NOW = 1_800_000_000.0
URL = "https://api.example/data/42"
KEY = nacl.signing.SigningKey(b"e" * 32)


def proof(**claims: Any) -> str:
    """A proof signed by ``KEY`` for ``GET URL`` at ``NOW``, with ``claims`` replacing or
    (``None``) removing those defaults."""
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(KEY.verify_key))},
    }
    body: dict[str, Any] = {"jti": "j-1", "htm": "GET", "htu": URL, "iat": int(NOW)}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    signing_input = ".".join(
        jws.b64url_encode(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, body)
    )
    signature = jws.sign_detached(signing_input.encode("ascii"), KEY)
    return signing_input + "." + jws.b64url_encode(signature)


def reason(token_proof: str, *, access_token: str | None = None, htu: str = URL) -> str:
    try:
        DPoPVerifier(60).verify(token_proof, htm="GET", htu=htu, now=NOW, access_token=access_token)
    except BindingError as exc:
        return exc.reason
    return "ok"


def test_the_reference_proof_is_accepted() -> None:
    # The proofs below differ from this one in one claim each.
    assert reason(proof()) == "ok"
    assert reason(proof(jti="j" * 256)) == "ok"


# Would fail if: an empty or over-long jti were accepted (a proof's single use is keyed
# by its jti).
@pytest.mark.parametrize("jti", ["", "j" * 257, None, 7])
def test_a_jti_must_be_one_to_256_characters(jti: object) -> None:
    assert reason(proof(jti=jti)) == "DPoP proof jti missing or malformed"


# Would fail if: a proof naming no usable URI matched a request whose URI is unknown or
# not http(s) (both normalize to nothing), so a proof bound to no URL passed anywhere.
@pytest.mark.parametrize("claimed", [None, "", "not a uri", "ftp://api.example/data/42"])
@pytest.mark.parametrize("request_uri", ["", "not a uri", "ftp://api.example/data/42"])
def test_a_proof_without_an_http_uri_matches_no_request(claimed: object, request_uri: str) -> None:
    assert reason(proof(htu=claimed), htu=request_uri) == (
        "DPoP proof htu does not match the request URI"
    )


def test_only_http_and_https_uris_are_named() -> None:
    assert normalize_htu("ftp://api.example/data/42") is None
    assert normalize_htu("wss://api.example:443/data") is None
    assert normalize_htu("HTTPS://API.example:443/data") == "https://api.example/data"
