"""Server-provided DPoP nonces (RFC 9449 sections 8 and 9) and the verifier a request's
proof is checked by, with or without deferred recording."""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
import pytest

from tasklease.core.audit import deferring
from tasklease.core.binding import DPoPNonces, recording
from tasklease.rules import jws
from tasklease.rules.binding import DPoPNonceRequired, DPoPVerifier, MemoryProofLedger

NOW = 1_800_000_000.0
LIFETIME = 60
URL = "https://broker.example/v1/token/renew"
KEY = nacl.signing.SigningKey(b"n" * 32)


def proof(*, iat: float = NOW, **claims: Any) -> str:
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(KEY.verify_key))},
    }
    body = {"jti": f"j-{iat}-{sorted(claims.items())}", "htm": "POST", "htu": URL, "iat": int(iat)}
    body.update(claims)
    signing_input = ".".join(
        jws.b64url_encode(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, body)
    )
    signature = jws.sign_detached(signing_input.encode("ascii"), KEY)
    return signing_input + "." + jws.b64url_encode(signature)


# Would fail if: a nonce lived past the slot after the one it was issued in, or a nonce
# made under another key (another broker's) were taken.
def test_a_nonce_lives_for_its_slot_and_the_next_under_its_key_only() -> None:
    nonces = DPoPNonces(b"k" * 32, LIFETIME)
    issued = nonces.issue(NOW)
    assert nonces.check(issued, NOW)
    assert nonces.check(issued, NOW + LIFETIME)
    assert not nonces.check(issued, NOW + 2 * LIFETIME)
    assert not nonces.check(issued, NOW - LIFETIME)  # not before its slot
    assert not DPoPNonces(b"o" * 32, LIFETIME).check(issued, NOW)
    assert not nonces.check(issued[:-2] + "AA", NOW)


# Would fail if: a verifier given nonces took a proof without one, or with one that is
# not current, instead of asking for a fresh one.
def test_a_verifier_with_nonces_refuses_a_proof_without_a_current_one() -> None:
    nonces = DPoPNonces(b"k" * 32, LIFETIME)
    verifier = DPoPVerifier(60, nonces=nonces)
    stale = nonces.issue(NOW - 2 * LIFETIME)
    for bad in (proof(), proof(nonce=stale), proof(nonce=7)):
        with pytest.raises(DPoPNonceRequired) as refused:
            verifier.check(bad, htm="POST", htu=URL, now=NOW)
        assert nonces.check(refused.value.nonce, NOW)
    assert verifier.check(proof(nonce=nonces.issue(NOW)), htm="POST", htu=URL, now=NOW)


# Would fail if: the proof were remembered only for its window, not for the clock skew
# by which replicas sharing the ledger may differ.
def test_a_proof_is_remembered_past_its_window_by_the_retention() -> None:
    checked = DPoPVerifier(60, retain=30).check(proof(), htm="POST", htu=URL, now=NOW)
    assert checked.expires_at == NOW + 60 + 30


# Would fail if: the verifier that collects a request's proof for deferred recording
# dropped the broker's nonce requirement or its retention.
def test_a_deferred_verifier_keeps_the_nonces_and_the_retention() -> None:
    nonces = DPoPNonces(b"k" * 32, LIFETIME)
    verifier = DPoPVerifier(60, ledger=MemoryProofLedger(), nonces=nonces, retain=30)
    made = deferring(lambda: recording(verifier, proof()))
    assert made.value is not None
    deferred_verifier, deferred = made.value
    assert deferred is not None and deferred_verifier is not verifier
    with pytest.raises(DPoPNonceRequired):
        deferred_verifier.verify(proof(), htm="POST", htu=URL, now=NOW)
    deferred_verifier.verify(proof(nonce=nonces.issue(NOW)), htm="POST", htu=URL, now=NOW)
    assert [expires for _, expires in deferred.proofs] == [NOW + 60 + 30]
    # Outside a deferral the verifier is used as it is.
    assert recording(verifier, proof()) == (verifier, None)
