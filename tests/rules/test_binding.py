"""Holder binding: the SDK's DPoP proofs against the rules both broker and verifier apply."""

from __future__ import annotations

import ssl

import nacl.signing
import pytest

from tasklease.client._holder import DPoPKey
from tasklease.rules import jws
from tasklease.rules.binding import (
    BindingError,
    DPoPVerifier,
    Presentation,
    cert_thumbprint,
    check_binding,
    normalize_htu,
    presented_thumbprint,
    url_path,
)

NOW = 1_800_000_000.0
URL = "https://api.example/data/42"


def refusal(cnf: object, token: str, presented: Presentation, dpop: DPoPVerifier) -> str:
    try:
        check_binding(cnf, token, presented, dpop=dpop, now=NOW)
    except BindingError as exc:
        return exc.reason
    return "ok"


def test_an_sdk_proof_proves_its_key_once() -> None:
    key = DPoPKey(nacl.signing.SigningKey(b"k" * 32), clock=lambda: NOW)
    assert key.thumbprint == jws.jwk_thumbprint(bytes(key.key.verify_key))
    dpop = DPoPVerifier(60)
    cnf = {"jkt": key.thumbprint}
    proof = key.proof("GET", URL + "?q=1", "the.token.x")
    # Schemes compare without case (RFC 9110 section 11.1).
    presented = Presentation(scheme="dpop", dpop_proof=proof, htm="GET", htu=URL)
    assert refusal(cnf, "the.token.x", presented, dpop) == "ok"
    assert refusal(cnf, "the.token.x", presented, dpop) == "DPoP proof replayed (jti already used)"
    other = key.proof("GET", URL, "another.token.x")
    assert refusal(
        cnf, "the.token.x", Presentation(scheme="DPoP", dpop_proof=other, htm="GET", htu=URL), dpop
    ) == ("DPoP proof ath does not match the access token")
    assert refusal(cnf, "the.token.x", Presentation(), dpop) == (
        "DPoP-bound token presented as a bearer token"
    )
    assert refusal(None, "t", Presentation(scheme="DPoP"), dpop) == (
        "DPoP scheme used with a token not bound to a DPoP key"
    )
    assert len(dpop) == 1


def test_registration_proofs_carry_no_ath() -> None:
    key = DPoPKey(clock=lambda: NOW)
    dpop = DPoPVerifier(60)
    assert dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW) == key.thumbprint
    with pytest.raises(BindingError, match="ath without an access token"):
        dpop.verify(key.proof("POST", URL, "t.t.t"), htm="POST", htu=URL, now=NOW)
    with pytest.raises(BindingError, match="acceptance window"):
        dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW + 61)


def test_a_proof_is_refused_from_the_instant_its_ledger_forgets_it() -> None:
    """Single use for as long as it is acceptable (RFC 9449 section 11.1): the ledger keeps
    a proof until ``iat + window``, and from that instant the window refuses it."""
    key = DPoPKey(clock=lambda: NOW)
    dpop = DPoPVerifier(60)
    proof = key.proof("POST", URL)
    dpop.verify(proof, htm="POST", htu=URL, now=NOW + 1)
    with pytest.raises(BindingError, match="acceptance window"):
        dpop.verify(proof, htm="POST", htu=URL, now=NOW + 60)
    with pytest.raises(BindingError, match="acceptance window"):
        dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW - 60)
    assert dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW + 59.999)


def test_certificate_binding_and_presented_thumbprints() -> None:
    der = b"0\x82certificate bytes"
    x5t = cert_thumbprint(der)
    pem = ssl.DER_cert_to_PEM_cert(der)
    assert presented_thumbprint(der) == presented_thumbprint(pem) == x5t
    assert presented_thumbprint(pem.encode("ascii")) == presented_thumbprint(x5t) == x5t
    assert presented_thumbprint(None) == presented_thumbprint(b"") == ""
    with pytest.raises(BindingError, match="thumbprint malformed"):
        presented_thumbprint("short")
    dpop = DPoPVerifier(60)
    assert refusal({"x5t#S256": x5t}, "t", Presentation(cert_thumbprint=x5t), dpop) == "ok"
    assert refusal({"x5t#S256": x5t}, "t", Presentation(), dpop) == (
        "certificate-bound token presented without a client certificate"
    )
    assert refusal({"x5t#S256": x5t}, "t", Presentation(cert_thumbprint="x" * 43), dpop) == (
        "certificate-bound token presented with another certificate"
    )


def test_a_proof_iat_no_float_holds_is_outside_the_window() -> None:
    """An exact JSON integer beyond a float's range is refused as out of the window, not
    raised as an arithmetic error the caller would not turn into a refusal."""
    for iat in (10**400, -(10**400)):
        key = DPoPKey(clock=lambda iat=iat: iat)  # type: ignore[misc]
        with pytest.raises(BindingError, match="acceptance window"):
            DPoPVerifier(60).verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW)


@pytest.mark.parametrize(
    ("decoded", "written"),
    [
        ("/files/a b", "/files/a%20b"),
        ("/files/a%20b", "/files/a%2520b"),  # a literal "%" is no encoding
        ("/files/a?/../b#c\\d", "/files/a%3F/../b%23c%5Cd"),
        ("/files/\u00e9", "/files/%C3%A9"),
        ("/t/acme/v1/token:x@y;z", "/t/acme/v1/token:x@y;z"),
    ],
)
def test_a_request_path_is_named_as_its_url_writes_it(decoded: str, written: str) -> None:
    # The URI a DPoP proof must name, broker and resource servers alike: two requests
    # for two resources never share one.
    assert url_path(decoded) == written


# Would fail if: a proof naming a path with lower-case hex digits, or an unreserved
# character encoded, were refused where the same URL written otherwise is accepted (RFC
# 3986 section 6.2.2); or if an encoded reserved character were read as the character.
def test_percent_encodings_in_an_htu_are_compared_in_one_form() -> None:
    assert normalize_htu("https://rs.example/f/%c3%a9") == "https://rs.example/f/%C3%A9"
    assert normalize_htu("https://rs.example/%7Euser/a%2db") == "https://rs.example/~user/a-b"
    assert normalize_htu("https://rs.example/a%2fb") == "https://rs.example/a%2Fb"
    assert normalize_htu("https://rs.example/a%2Fb") != normalize_htu("https://rs.example/a/b")
    assert normalize_htu("https://rs.example/a%2520b") == "https://rs.example/a%2520b"
    decoded = "/files/\u00e9 x"
    assert normalize_htu("https://rs.example" + url_path(decoded)) == normalize_htu(
        "https://rs.example/files/%c3%a9%20x"
    )
