"""Edges of the DPoP proof checks (RFC 9449 section 4.3) that every verifier applies."""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
import pytest

from tasklease.rules import jws
from tasklease.rules.binding import (
    PROOF_OVER_QUOTA,
    BindingError,
    DPoPVerifier,
    MemoryProofLedger,
    Presentation,
    access_token_hash,
    check_binding,
    normalize_htu,
)

NOW = 1_800_000_000.0
URL = "https://api.example/data/42"
KEY = nacl.signing.SigningKey(b"e" * 32)


def proof(key: nacl.signing.SigningKey = KEY, **claims: Any) -> str:
    """A proof signed by ``key`` for ``GET URL`` at ``NOW``, with ``claims`` replacing or
    (``None``) removing those defaults."""
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(key.verify_key))},
    }
    body: dict[str, Any] = {"jti": "j-1", "htm": "GET", "htu": URL, "iat": int(NOW)}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    signing_input = ".".join(
        jws.b64url_encode(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, body)
    )
    signature = jws.sign_detached(signing_input.encode("ascii"), key)
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


# Would fail if: check_binding counted a proof against its own key rather than the holder
# it is told (an offline chain's root), so delegate keys derived without limit each got a
# fresh quota in the ledger.
def test_a_bound_token_proof_counts_against_the_named_holder() -> None:
    dpop = DPoPVerifier(60, ledger=MemoryProofLedger(holder_quota=1))
    refusals: list[str] = []
    for seed in (b"1", b"2"):
        delegate = nacl.signing.SigningKey(seed * 32)
        token_proof = proof(delegate, ath=access_token_hash("t.t.t"))
        cnf = {"jkt": jws.jwk_thumbprint(bytes(delegate.verify_key))}
        presented = Presentation(scheme="DPoP", dpop_proof=token_proof, htm="GET", htu=URL)
        try:
            check_binding(cnf, "t.t.t", presented, dpop=dpop, now=NOW, holder="root")
        except BindingError as exc:
            refusals.append(exc.reason)
        else:
            refusals.append("ok")
    assert refusals == ["ok", PROOF_OVER_QUOTA]
