"""``tasklease token inspect`` judges a signature by the keys the verifier would use.

The JWK Set is read by the verifier's own rule (``tasklease.verify.parse_jwks``): a key
whose ``kid`` is not its RFC 7638 thumbprint, one published with its private half, or one
for another algorithm or use verifies nothing, so ``inspect`` never says "valid" of a
token every resource server refuses.
"""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
import pytest

from tasklease.cli._token import _check_signature
from tasklease.rules import jws

_KEY = nacl.signing.SigningKey(bytes(range(32)))
_X = jws.b64url_encode(bytes(_KEY.verify_key))
_THUMBPRINT = jws.jwk_thumbprint(bytes(_KEY.verify_key))


def _jwk(**changes: str) -> dict[str, str]:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _X, "kid": _THUMBPRINT, "alg": "EdDSA"}
    jwk.update({"use": "sig", **changes})
    return jwk


def _checked(kid: str, jwks: Any) -> tuple[bool, str]:
    token = jws.encode(json.dumps({"sub": "a"}).encode(), typ="at+jwt", kid=kid, key=_KEY)
    header, _ = jws.decode_unverified(token)
    return _check_signature(token, header, jwks)


def test_a_key_the_verifier_uses_verifies() -> None:
    ok, text = _checked(_THUMBPRINT, {"keys": [_jwk()]})
    assert ok and text == f"valid (kid {_THUMBPRINT})"


# Would fail if: inspect read the JWK Set by a rule of its own that took any kid, a key
# with its private half, or a key for another algorithm or use.
@pytest.mark.parametrize(
    ("kid", "jwk"),
    [
        ("k1", _jwk(kid="k1")),  # kid is not the key's thumbprint
        (_THUMBPRINT, _jwk(d=jws.b64url_encode(bytes(_KEY)))),  # its private half is out
        (_THUMBPRINT, _jwk(alg="ES256")),
        (_THUMBPRINT, _jwk(use="enc")),
    ],
    ids=["kid-not-thumbprint", "private-half", "other-alg", "other-use"],
)
def test_a_key_the_verifier_refuses_verifies_nothing(kid: str, jwk: dict[str, str]) -> None:
    ok, text = _checked(kid, {"keys": [jwk]})
    assert not ok
    assert text.startswith("unknown kid") and "0 usable keys" in text


def test_an_answer_that_is_no_jwk_set_verifies_nothing() -> None:
    ok, text = _checked(_THUMBPRINT, [_jwk()])
    assert not ok and "not a JWK Set" in text
