"""The compact EdDSA JWS codec: RFC vectors, cross-verification, attacks, properties."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from typing import Any

import jwt
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws as joserfc_jws
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import OKPKey

from tasklease.rules import _codec, jws
from tasklease.rules.jws import JWSError, b64url_decode, b64url_encode

# RFC 8037 appendix A.1 (the key), A.4 (the JWS over "Example of Ed25519 signing").
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_SIGNING_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIGNATURE = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

# joserfc warns that RFC 9864 deprecates the polymorphic "EdDSA" for "Ed25519"; AgentWrit's
# SDK and tokens use "EdDSA", so that is the name we sign and accept.
_JOSERFC_EDDSA_DEPRECATED = pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")

TYP = "JWT"
TYPS = frozenset({TYP})


def _std_b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Signer:
    """A key with its kid and a resolver that knows only it."""

    def __init__(self, kid: str = "k1", key: nacl.signing.SigningKey | None = None) -> None:
        self.kid = kid
        self.key = key if key is not None else nacl.signing.SigningKey.generate()

    def resolve(self, kid: str) -> nacl.signing.VerifyKey | None:
        return self.key.verify_key if kid == self.kid else None

    def token(self, claims: dict[str, Any], typ: str = TYP) -> str:
        return jws.encode(_compact(claims), typ=typ, kid=self.kid, key=self.key)

    def forge(self, header: dict[str, Any] | bytes, payload: bytes) -> str:
        """A token with an arbitrary header, correctly signed by this key."""
        raw_header = header if isinstance(header, bytes) else _compact(header)
        signing_input = f"{_std_b64url(raw_header)}.{_std_b64url(payload)}"
        signature = self.key.sign(signing_input.encode()).signature
        return f"{signing_input}.{_std_b64url(signature)}"

    def decode(self, token: str, **kwargs: Any) -> jws.Decoded:
        kwargs.setdefault("allowed_typs", TYPS)
        return jws.decode(token, resolve_key=self.resolve, **kwargs)


@pytest.fixture
def signer() -> Signer:
    return Signer()


def _reason(excinfo: pytest.ExceptionInfo[JWSError]) -> str:
    return excinfo.value.reason


# -- known answers -------------------------------------------------------------------


def test_rfc8037_a4_signature_verifies_and_is_reproduced() -> None:
    private = nacl.signing.SigningKey(b64url_decode(RFC8037_D))
    public = nacl.signing.VerifyKey(b64url_decode(RFC8037_X))
    assert bytes(private.verify_key) == bytes(public)
    signature = b64url_decode(RFC8037_SIGNATURE)
    message = RFC8037_SIGNING_INPUT.encode("ascii")

    assert jws.verify_detached(message, signature, public)
    # Ed25519 is deterministic (RFC 8032 section 5.1.6): same key, same input, same bytes.
    assert jws.sign_detached(message, private) == signature
    assert not jws.verify_detached(message + b"x", signature, public)


def test_rfc8037_a4_token_is_refused_by_decode_for_its_header() -> None:
    # The RFC's header carries no typ or kid; our profile requires both.
    token = f"{RFC8037_SIGNING_INPUT}.{RFC8037_SIGNATURE}"
    public = nacl.signing.VerifyKey(b64url_decode(RFC8037_X))
    with pytest.raises(JWSError) as excinfo:
        jws.decode(token, resolve_key=lambda _kid: public, allowed_typs=TYPS)
    assert _reason(excinfo) == "typ missing or not a string"


def test_encode_header_is_exact(signer: Signer) -> None:
    token = signer.token({"sub": "a"}, typ="at+jwt")
    header_seg, payload_seg, signature_seg = token.split(".")
    assert b64url_decode(header_seg) == b'{"alg":"EdDSA","typ":"at+jwt","kid":"k1"}'
    assert b64url_decode(payload_seg) == b'{"sub":"a"}'
    assert len(b64url_decode(signature_seg)) == 64
    assert "=" not in token


def test_encode_then_decode(signer: Signer) -> None:
    claims = {"sub": "agent", "scope": ["read:x"], "nested": {"n": 1, "f": 1.5, "u": "é"}}
    decoded = signer.decode(signer.token(claims))
    assert decoded == jws.Decoded(typ=TYP, kid="k1", claims=claims)


def test_encode_refuses_bad_kid() -> None:
    key = nacl.signing.SigningKey.generate()
    for kid in ("", "a/b", "x" * 129, 'a"b'):
        with pytest.raises(JWSError):
            jws.encode(b"{}", typ=TYP, kid=kid, key=key)


def test_decode_accepts_every_allowed_typ(signer: Signer) -> None:
    token = signer.token({"a": 1}, typ="tasklease-launch+jwt")
    decoded = signer.decode(token, allowed_typs={"JWT", "tasklease-launch+jwt"})
    assert decoded.typ == "tasklease-launch+jwt"


def test_decode_unverified_returns_header_and_payload(signer: Signer) -> None:
    token = signer.token({"sub": "a"})
    header, payload = jws.decode_unverified(token)
    assert header == {"alg": "EdDSA", "typ": TYP, "kid": "k1"}
    assert payload == {"sub": "a"}
    # Inspection shows even what decode refuses, as long as it is structurally a JWS.
    unsigned = _std_b64url(b'{"alg":"none"}') + "." + _std_b64url(b"{}") + "."
    assert jws.decode_unverified(unsigned) == ({"alg": "none"}, {})
    with pytest.raises(JWSError):
        jws.decode_unverified("a.b")
    with pytest.raises(JWSError):
        jws.decode_unverified("x" * 9000)


# -- cross-verification with PyJWT and joserfc ---------------------------------------


def _cryptography_pair(
    signer: Signer,
) -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private = Ed25519PrivateKey.from_private_bytes(bytes(signer.key))
    return private, private.public_key()


def test_our_tokens_verify_with_pyjwt(signer: Signer) -> None:
    claims = {"sub": "agent", "scope": ["read:data:*"], "iat": 1_700_000_000}
    _, public = _cryptography_pair(signer)
    token = signer.token(claims)
    assert jwt.decode(token, public, algorithms=["EdDSA"]) == claims
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": TYP, "kid": "k1"}


@_JOSERFC_EDDSA_DEPRECATED
def test_our_tokens_verify_with_joserfc(signer: Signer) -> None:
    claims = {"sub": "agent", "n": 3}
    key = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "x": _std_b64url(bytes(signer.key.verify_key))}
    )
    token = signer.token(claims)
    result = joserfc_jws.deserialize_compact(token, key, algorithms=["EdDSA"])
    assert json.loads(result.payload) == claims
    assert result.protected == {"alg": "EdDSA", "typ": TYP, "kid": "k1"}
    assert joserfc_jwt.decode(token, key, algorithms=["EdDSA"]).claims == claims


def test_pyjwt_tokens_verify_with_decode(signer: Signer) -> None:
    private, _ = _cryptography_pair(signer)
    claims = {"sub": "agent", "scope": ["a", "b"], "x": {"y": None}}
    token = jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": "k1", "typ": TYP})
    decoded = signer.decode(token)
    assert decoded.claims == claims
    assert decoded.kid == "k1"


@_JOSERFC_EDDSA_DEPRECATED
def test_joserfc_tokens_verify_with_decode(signer: Signer) -> None:
    key = OKPKey.import_key(
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _std_b64url(bytes(signer.key.verify_key)),
            "d": _std_b64url(bytes(signer.key)),
        }
    )
    claims = {"sub": "agent", "n": 1}
    header = {"alg": "EdDSA", "typ": TYP, "kid": "k1"}
    token = joserfc_jwt.encode(header, claims, key, algorithms=["EdDSA"])
    assert signer.decode(token).claims == claims


# -- attacks -------------------------------------------------------------------------


def _refused(signer: Signer, token: str, **kwargs: Any) -> str:
    with pytest.raises(JWSError) as excinfo:
        signer.decode(token, **kwargs)
    return _reason(excinfo)


def test_alg_none_with_empty_signature(signer: Signer) -> None:
    header = _std_b64url(_compact({"alg": "none", "typ": TYP, "kid": "k1"}))
    payload = _std_b64url(b'{"sub":"admin"}')
    assert _refused(signer, f"{header}.{payload}.") == "token has an empty segment"
    # Even with something in the signature slot, none is not our algorithm.
    assert _refused(signer, f"{header}.{payload}.AAAA") == "alg not allowed"


def test_alg_confusion_hs256_keyed_with_public_key(signer: Signer) -> None:
    header = _std_b64url(_compact({"alg": "HS256", "typ": TYP, "kid": "k1"}))
    payload = _std_b64url(b'{"sub":"admin"}')
    mac = hmac.new(
        bytes(signer.key.verify_key), f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()
    assert _refused(signer, f"{header}.{payload}.{_std_b64url(mac)}") == "alg not allowed"


@pytest.mark.parametrize("alg", ["Ed25519", "ES256", "eddsa", "EdDSA ", "RS256", None, 1])
def test_other_algs_refused_even_when_signed_by_our_key(signer: Signer, alg: Any) -> None:
    token = signer.forge({"alg": alg, "typ": TYP, "kid": "k1"}, b"{}")
    assert _refused(signer, token) == "alg not allowed"


def test_missing_alg_refused(signer: Signer) -> None:
    assert _refused(signer, signer.forge({"typ": TYP, "kid": "k1"}, b"{}")) == "alg not allowed"


def test_unknown_kid(signer: Signer) -> None:
    token = signer.forge({"alg": "EdDSA", "typ": TYP, "kid": "k2"}, b"{}")
    assert _refused(signer, token) == "unknown kid"


@pytest.mark.parametrize(
    "kid", ["../../etc/passwd", "' OR 1=1 --", "", "a" * 129, "k1\x00", "k 1", 7, None]
)
def test_malformed_kid_never_reaches_the_resolver(kid: Any) -> None:
    key = nacl.signing.SigningKey.generate()
    forged = Signer(key=key).forge({"alg": "EdDSA", "typ": TYP, "kid": kid}, b"{}")

    def resolver(_kid: str) -> nacl.signing.VerifyKey:
        raise AssertionError("resolve_key called with a malformed kid")

    with pytest.raises(JWSError) as excinfo:
        jws.decode(forged, resolve_key=resolver, allowed_typs=TYPS)
    assert _reason(excinfo) == "kid malformed"


def test_kid_of_128_chars_is_accepted() -> None:
    kid = "a-_Z9" * 25 + "abc"
    assert len(kid) == 128
    holder = Signer(kid=kid)
    assert holder.decode(holder.token({})).kid == kid


@pytest.mark.parametrize("parameter", ["jku", "x5u", "jwk", "x5c", "crit", "b64", "cty", "zip"])
def test_extra_header_parameters_refused(signer: Signer, parameter: str) -> None:
    value: Any = "https://attacker.example/keys"
    if parameter == "crit":
        value = ["b64"]
    elif parameter == "b64":
        value = False
    elif parameter == "jwk":
        value = {"kty": "OKP", "crv": "Ed25519", "x": _std_b64url(b"\x00" * 32)}
    header = {"alg": "EdDSA", "typ": TYP, "kid": "k1", parameter: value}
    reason = _refused(signer, signer.forge(header, b"{}"))
    assert reason == f"unexpected header parameter: {parameter}"


def test_unprintable_header_parameter_is_not_echoed(signer: Signer) -> None:
    header = {"alg": "EdDSA", "typ": TYP, "kid": "k1", "\n<script>": 1}
    assert _refused(signer, signer.forge(header, b"{}")) == "unexpected header parameter"


@pytest.mark.parametrize("typ", ["at+jwt", "text/jwt", "application/", "", None, ["JWT"], {"a": 1}])
def test_wrong_typ(signer: Signer, typ: Any) -> None:
    token = signer.forge({"alg": "EdDSA", "typ": typ, "kid": "k1"}, b"{}")
    assert _refused(signer, token) in {"typ not allowed", "typ missing or not a string"}


@pytest.mark.parametrize("typ", ["jwt", "Jwt", "application/JWT", "APPLICATION/jwt"])
def test_typ_compares_as_a_media_type(signer: Signer, typ: str) -> None:
    # RFC 7515 section 4.1.9: no case, and "application/" may be left out; the caller
    # gets the allowed spelling back.
    token = signer.forge({"alg": "EdDSA", "typ": typ, "kid": "k1"}, b"{}")
    assert signer.decode(token).typ == TYP
    assert jws.decode_parts(token, signer.resolve, TYPS)[0] == TYP


def test_tampered_payload_with_original_signature(signer: Signer) -> None:
    header, _, signature = signer.token({"sub": "agent", "scope": ["read"]}).split(".")
    evil = _std_b64url(_compact({"sub": "agent", "scope": ["admin"]}))
    assert _refused(signer, f"{header}.{evil}.{signature}") == "bad signature"


def test_signature_by_another_key(signer: Signer) -> None:
    other = Signer(kid="k1")
    assert _refused(signer, other.token({"sub": "a"})) == "bad signature"


def test_truncated_signature(signer: Signer) -> None:
    header, payload, signature = signer.token({"sub": "a"}).split(".")
    raw = b64url_decode(signature)
    for cut in (raw[:63], raw[:32], raw[:1], raw + b"\x00"):
        token = f"{header}.{payload}.{b64url_encode(cut)}"
        assert _refused(signer, token) == "signature length"
    # Cut in the middle of a base64 quantum: not even base64url.
    assert _refused(signer, f"{header}.{payload}.{signature[:-1]}").startswith("signature:")


def test_padding_refused(signer: Signer) -> None:
    header, payload, signature = signer.token({"sub": "ab"}).split(".")
    assert len(signature) % 4 == 2
    assert _refused(signer, f"{header}.{payload}.{signature}==").startswith("signature:")
    padded_header = base64.urlsafe_b64encode(b64url_decode(header)).decode()
    if padded_header != header:
        assert _refused(signer, f"{padded_header}.{payload}.{signature}").startswith("header:")


def test_non_canonical_last_char_refused(signer: Signer) -> None:
    header, payload, signature = signer.token({"sub": "a"}).split(".")
    # 64 bytes -> 86 characters; the last one carries 4 unused bits.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    index = alphabet.index(signature[-1])
    twin = signature[:-1] + alphabet[index | 1]
    assert b64url_decode(signature) == base64.urlsafe_b64decode(twin + "==")
    assert _refused(signer, f"{header}.{payload}.{twin}") == "signature: non-canonical base64url"


def test_duplicate_key_in_header(signer: Signer) -> None:
    raw = b'{"alg":"EdDSA","typ":"JWT","kid":"k1","alg":"EdDSA"}'
    assert _refused(signer, signer.forge(raw, b"{}")) == "duplicate key in header"
    # The classic: a parser that keeps the first sees "none", one that keeps the last sees
    # "EdDSA".
    raw = b'{"alg":"none","typ":"JWT","kid":"k1","alg":"EdDSA"}'
    assert _refused(signer, signer.forge(raw, b"{}")) == "duplicate key in header"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"sub":"a","sub":"admin"}',
        b'{"a":{"b":1,"b":2}}',
        b'{"a":[{"x":1},{"y":1,"y":1}]}',
        b'{"sub" : "a", "sub" : "a"}',
    ],
)
def test_duplicate_key_in_payload(signer: Signer, payload: bytes) -> None:
    token = signer.forge({"alg": "EdDSA", "typ": TYP, "kid": "k1"}, payload)
    assert _refused(signer, token) == "duplicate key in payload"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[]", "payload: not a JSON object"),
        (b'"sub"', "payload: not a JSON object"),
        (b"1", "payload: not a JSON object"),
        (b"null", "payload: not a JSON object"),
        (b"{", "payload: invalid JSON"),
        (b'{"a":1}x', "payload: invalid JSON"),
        (b'{"a":NaN}', "payload: number out of range"),
        (b'{"a":Infinity}', "payload: number out of range"),
        (b'{"a":1e999}', "payload: number out of range"),
        (b'{"a":"\xff"}', "payload: not UTF-8"),
        (b'{"a":"\xed\xa0\x80"}', "payload: not UTF-8"),
        (b'{"a":"\\ud800"}', "payload: not UTF-8"),
        (b"\xef\xbb\xbf{}", "payload: invalid JSON"),
        ('{"a":1}'.encode("utf-16"), "payload: not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "payload: nested too deeply"),
        (b'{"a":' + b"9" * 5000 + b"}", "payload: invalid JSON"),
    ],
)
def test_payload_must_be_a_strict_json_object(signer: Signer, payload: bytes, reason: str) -> None:
    token = signer.forge({"alg": "EdDSA", "typ": TYP, "kid": "k1"}, payload)
    assert _refused(signer, token, max_bytes=1 << 16) == reason


def _signed_with_payload_segment(signer: Signer, segment: str) -> str:
    header = _std_b64url(_compact({"alg": "EdDSA", "typ": TYP, "kid": "k1"}))
    signing_input = f"{header}.{segment}"
    signature = signer.key.sign(signing_input.encode()).signature
    return f"{signing_input}.{_std_b64url(signature)}"


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ("e30!", "payload: invalid base64url character"),  # outside the alphabet
        ("e30=", "payload: invalid base64url character"),  # padding
        ("e3+/", "payload: invalid base64url character"),  # the standard alphabet
        ("e30", None),  # b"{}": the control
        ("e30xx", "payload: invalid base64url length"),
    ],
)
def test_a_signed_payload_segment_must_still_be_base64url(
    signer: Signer, segment: str, reason: str | None
) -> None:
    token = _signed_with_payload_segment(signer, segment)
    if reason is None:
        assert signer.decode(token).claims == {}
    else:
        assert _refused(signer, token) == reason


@pytest.mark.parametrize("wrong", ["raw bytes", "short bytes", "an int", "a signing key"])
def test_a_resolver_must_hand_back_a_verify_key(signer: Signer, wrong: str) -> None:
    """Only a VerifyKey reaches libsodium: raw bytes, even the right ones, are refused."""
    key = {
        "raw bytes": bytes(signer.key.verify_key),
        "short bytes": bytes(signer.key.verify_key)[:31],
        "an int": 5,
        "a signing key": signer.key,
    }[wrong]
    token = signer.token({"sub": "a"})
    with pytest.raises(JWSError) as excinfo:
        jws.decode(token, resolve_key=lambda _kid: key, allowed_typs=TYPS)  # type: ignore[arg-type,return-value]
    assert _reason(excinfo) == "bad signature"
    assert not jws.verify_detached(b"m", b"\0" * 64, key)  # type: ignore[arg-type]


def test_signature_checks_agree_across_threads(signer: Signer) -> None:
    """Threads verifying good and bad tokens at once each get their own answer."""
    import threading

    good = [signer.token({"sub": f"a{i}", "pad": "x" * (i * 97)}) for i in range(40)]
    other = Signer(kid="k1")
    bad = [other.token({"sub": f"a{i}", "pad": "x" * (i * 89)}) for i in range(40)]
    wrong: list[str] = []

    def work(offset: int) -> None:
        for round_ in range(20):
            for i in range(40):
                index = (i + offset + round_) % 40
                if signer.decode(good[index], max_bytes=1 << 16).claims["sub"] != f"a{index}":
                    wrong.append("good")
                try:
                    signer.decode(bad[index], max_bytes=1 << 16)
                    wrong.append("bad accepted")
                except JWSError as exc:
                    if exc.reason != "bad signature":
                        wrong.append(exc.reason)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert wrong == []


def test_payload_accepts_non_canonical_but_valid_json(signer: Signer) -> None:
    # Spacing, escapes and number spellings that msgspec would write differently go
    # through the strict path and are accepted.
    payload = b'{ "a" : 1E2, "b": "\\u00e9\\ud83d\\ude00", "c": [ ], "d": -0 }'
    token = signer.forge({"alg": "EdDSA", "typ": TYP, "kid": "k1"}, payload)
    assert signer.decode(token).claims == {"a": 100.0, "b": "é😀", "c": [], "d": 0}


@pytest.mark.parametrize(
    "header",
    [b"[]", b"{", b'"alg"', b'{"alg":"EdDSA","typ":"JWT","kid":"k1"', b"\xff"],
)
def test_header_must_be_a_strict_json_object(signer: Signer, header: bytes) -> None:
    assert _refused(signer, signer.forge(header, b"{}")).startswith("header:")


def test_oversized_token_refused_before_any_work() -> None:
    def resolver(_kid: str) -> nacl.signing.VerifyKey:
        raise AssertionError("resolve_key called for an oversized token")

    key = nacl.signing.SigningKey.generate()
    big = jws.encode(_compact({"pad": "x" * 9000}), typ=TYP, kid="k1", key=key)
    with pytest.raises(JWSError) as excinfo:
        jws.decode(big, resolve_key=resolver, allowed_typs=TYPS)
    assert _reason(excinfo) == "token too large"
    # Not even a token: the cap comes before any parsing at all.
    with pytest.raises(JWSError) as excinfo:
        jws.decode("é" * 10_000, resolve_key=resolver, allowed_typs=TYPS)
    assert _reason(excinfo) == "token too large"
    small = jws.encode(b"{}", typ=TYP, kid="k1", key=key)
    with pytest.raises(JWSError) as excinfo:
        jws.decode(small, resolve_key=resolver, allowed_typs=TYPS, max_bytes=len(small) - 1)
    assert _reason(excinfo) == "token too large"


def test_token_of_exactly_max_bytes_is_accepted(signer: Signer) -> None:
    token = signer.token({"sub": "a"})
    assert signer.decode(token, max_bytes=len(token)).claims == {"sub": "a"}


def test_non_ascii_token(signer: Signer) -> None:
    header, payload, signature = signer.token({"sub": "a"}).split(".")
    assert _refused(signer, f"{header}.{payload}é.{signature}") == "token is not ASCII"
    fullwidth_dot = "\uff0e"
    assert _refused(signer, f"{header}{fullwidth_dot}{payload}.{signature}") == (
        "token is not ASCII"
    )


@pytest.mark.parametrize("cut", ["two", "four", "empty_payload", "empty_header", "blank"])
def test_segment_count(signer: Signer, cut: str) -> None:
    header, payload, signature = signer.token({"sub": "a"}).split(".")
    token = {
        "two": f"{header}.{payload}",
        "four": f"{header}.{payload}.{signature}.{signature}",
        "empty_payload": f"{header}..{signature}",
        "empty_header": f".{payload}.{signature}",
        "blank": "",
    }[cut]
    reason = _refused(signer, token)
    assert reason in {"token must have 3 segments", "token has an empty segment"}


def test_non_string_token(signer: Signer) -> None:
    token = signer.token({"sub": "a"})
    assert _refused(signer, token.encode()) == "token is not a string"  # type: ignore[arg-type]


def test_refusal_of_one_key_does_not_leak_to_a_cached_header(signer: Signer) -> None:
    # A header seen with a valid signature is parsed once; kid and typ are still checked
    # against the caller's ring and allow-list every time.
    token = signer.token({"sub": "a"})
    signer.decode(token)
    assert _refused(signer, token, allowed_typs=frozenset({"other"})) == "typ not allowed"
    with pytest.raises(JWSError) as excinfo:
        jws.decode(token, resolve_key=lambda _kid: None, allowed_typs=TYPS)
    assert _reason(excinfo) == "unknown kid"


# -- base64url -----------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xfe", b"abc", bytes(range(256))])
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert text == _std_b64url(data)
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["A", "AB=", "AB==", "a+b/", "ab c", "ab\n", "AB", "ABC", "é"])
def test_b64url_decode_strict(text: str) -> None:
    # "AB" and "ABC" are non-canonical ("AA" and "AAA" encode the same bytes).
    with pytest.raises(JWSError):
        b64url_decode(text)


@given(st.binary(max_size=80))
def test_b64url_every_encoding_is_the_only_one(data: bytes) -> None:
    text = b64url_encode(data)
    assert b64url_decode(text) == data
    for i in range(len(text)):
        for replacement in "AB_-9z":
            other = text[:i] + replacement + text[i + 1 :]
            if other != text:
                assert _decoded_or_none(other) != data


def _decoded_or_none(text: str) -> bytes | None:
    try:
        return b64url_decode(text)
    except JWSError:
        return None


# The fast base64url paths (one translate, then msgspec or binascii strict mode) must
# answer exactly as the checked path, rule by rule: same bytes, or a refusal.

_B64_TEXT = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters + string.digits + '-_+/=.!"\\ \n\x00é')),
    max_size=24,
)
_SPANS = [_codec.b64_span_binascii]
if hasattr(_codec, "b64_span_msgspec"):  # with msgspec installed, as in the server's deps
    _SPANS.append(_codec.b64_span_msgspec)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except JWSError as exc:
        return exc.reason


@settings(max_examples=2000, deadline=None)
@given(text=_B64_TEXT | st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=90))
def test_b64url_fast_path_answers_as_the_checked_path(text: str) -> None:
    checked = _outcome(_codec.b64url_decode_checked, text, "base64url")
    assert _outcome(b64url_decode, text) == checked
    if text.isascii():
        raw = text.encode("ascii")
        # The spans check alphabet and length, not the canonical last character: as
        # the payload of a signed token (_signed_payload_checked).
        expected = _outcome(_codec.signed_payload_checked, raw)
        expected = expected if isinstance(expected, bytes) else None
        for span in _SPANS:
            assert span(b"." + raw, 0, len(raw) + 1) == expected, span
            # Inside a token: the segment between two separators.
            assert span(b"xx." + raw + b".yy", 2, len(raw) + 3) == expected, span


@pytest.mark.parametrize("span", _SPANS)
@pytest.mark.parametrize(
    "segment",
    ["", "YQ", "YR", "YWI", "YWJ", "YWJj", "Y", "YQ=", "YQ==", "Y.Q", "YQ.", ".YQ", 'Y"Q', "Y\\Q"],
)
def test_b64_spans_refuse_what_the_checked_path_refuses(span: Any, segment: str) -> None:
    raw = segment.encode()
    expected = _outcome(_codec.signed_payload_checked, raw)
    assert span(b"." + raw, 0, len(raw) + 1) == (expected if isinstance(expected, bytes) else None)


def test_b64url_fast_path_is_the_one_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    # b64url_decode answers from the span (msgspec when installed), not the checked path.
    calls: list[str] = []
    real = _codec.b64url_decode_checked

    def spy(text: str, what: str) -> bytes:
        calls.append(text)
        return real(text, what)

    monkeypatch.setattr(_codec, "b64url_decode_checked", spy)
    assert b64url_decode("YWJj") == b"abc"
    assert calls == []
    with pytest.raises(JWSError) as excinfo:
        b64url_decode("YWJ")  # non-canonical: the checked path gives the reason
    assert _reason(excinfo) == "base64url: non-canonical base64url"
    assert calls == ["YWJ"]


def _token_variants(signer: Signer) -> dict[str, str]:
    """Good and bad tokens whose refusals exercise every step of decode."""
    good = signer.token({"sub": "a", "pad": "xy"})
    header, payload, signature = good.split(".")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    twin = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 1]
    return {
        "good": good,
        "good, every payload length": signer.token({"sub": "ab", "pad": "xyz"}),
        "good, another length": signer.token({"sub": "abc", "pad": "x"}),
        "bad signature": f"{header}.{payload[:-2]}AA.{signature}",
        "non-canonical signature": f"{header}.{payload}.{twin}",
        "padded signature": f"{header}.{payload}.{signature}==",
        "standard alphabet signature": f"{header}.{payload}.{signature[:-3]}+/A",
        "short signature": f"{header}.{payload}.{signature[:-4]}",
        "signature length 1 mod 4": f"{header}.{payload}.{signature}A",
        "bad payload character": _signed_with_payload_segment(signer, "e30!"),
        "payload padding": _signed_with_payload_segment(signer, "e30="),
        "payload length": _signed_with_payload_segment(signer, "e30xx"),
        "payload standard alphabet": _signed_with_payload_segment(signer, "e3+/"),
        "empty payload object": _signed_with_payload_segment(signer, "e30"),
        "duplicate key": signer.forge(
            {"alg": "EdDSA", "typ": TYP, "kid": "k1"}, b'{"sub":"a","sub":"b"}'
        ),
    }


def _use_span(patch: pytest.MonkeyPatch, span: Any) -> None:
    """Decode every base64url span with ``span``: the token path and the codec's own."""
    patch.setattr(jws, "b64_span", span)
    patch.setattr(_codec, "b64_span", span)


@pytest.mark.parametrize("span", _SPANS)
@pytest.mark.parametrize("libsodium", [True, False])
def test_decode_answers_alike_on_every_path(
    signer: Signer, span: Any, libsodium: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reference: every token decoded with the checked paths only (binascii, and
    # VerifyKey.verify through verify_detached).
    variants = _token_variants(signer)
    with monkeypatch.context() as m:
        _use_span(m, lambda *_args: None)
        m.setattr(jws, "_sodium_open", None)
        expected = {name: _outcome(signer.decode, token) for name, token in variants.items()}
    assert isinstance(expected["good"], jws.Decoded)
    assert expected["bad signature"] == "bad signature"
    assert expected["non-canonical signature"] == "signature: non-canonical base64url"
    assert expected["payload length"] == "payload: invalid base64url length"
    _use_span(monkeypatch, span)
    if not libsodium:
        monkeypatch.setattr(jws, "_sodium_open", None)
    for name, token in variants.items():
        assert _outcome(signer.decode, token) == expected[name], name
        if isinstance(expected[name], jws.Decoded):
            parts = jws.decode_parts(token, signer.resolve, TYPS)
            assert parts == tuple(expected[name])


@pytest.mark.parametrize("span", _SPANS)
def test_decode_parts_claimed_accepts_what_decode_accepts(
    signer: Signer, span: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: the claimed variant skipped a check of decode (accepting a token it
    # refuses), handed the resolver other claims than those it returns, or returned claims
    # other than decode's.
    variants = _token_variants(signer)
    expected = {name: _outcome(signer.decode, token) for name, token in variants.items()}
    _use_span(monkeypatch, span)
    for name, token in variants.items():
        seen: list[tuple[str, dict[str, Any]]] = []

        def resolve(kid: str, claims: dict[str, Any]) -> nacl.signing.VerifyKey | None:
            seen.append((kid, claims))
            return signer.resolve(kid)

        outcome = _outcome(jws.decode_parts_claimed, token, resolve, TYPS)
        if isinstance(expected[name], jws.Decoded):
            assert outcome == tuple(expected[name]), name
            assert seen == [("k1", outcome[2])] and seen[0][1] is outcome[2], name
        else:
            assert isinstance(outcome, str), name  # refused, as decode refuses it


def test_decode_parts_claimed_lets_the_claims_choose_the_key(signer: Signer) -> None:
    # Would fail if: the key the claims chose were not the one the signature is checked
    # against, or a malformed payload reached the resolver.
    other = Signer()  # same kid, another key
    token = signer.token({"iss": "one", "sub": "a"})
    keys = {"one": signer.key.verify_key, "two": other.key.verify_key}

    def by_issuer(kid: str, claims: dict[str, Any]) -> nacl.signing.VerifyKey | None:
        return keys.get(claims.get("iss")) if kid == "k1" else None

    assert jws.decode_parts_claimed(token, by_issuer, TYPS)[2] == {"iss": "one", "sub": "a"}
    forged = other.token({"iss": "one", "sub": "a"})
    assert _outcome(jws.decode_parts_claimed, forged, by_issuer, TYPS) == "bad signature"
    assert _outcome(jws.decode_parts_claimed, other.token({"iss": "three"}), by_issuer, TYPS) == (
        "unknown kid"
    )

    def never(_kid: str, _claims: dict[str, Any]) -> nacl.signing.VerifyKey:
        raise AssertionError("resolve_key called for a malformed payload")

    duplicate = signer.forge({"alg": "EdDSA", "typ": TYP, "kid": "k1"}, b'{"iss":"a","iss":"b"}')
    assert "duplicate" in _outcome(jws.decode_parts_claimed, duplicate, never, TYPS)
    not_object = _signed_with_payload_segment(signer, _std_b64url(b"[1]"))
    assert isinstance(_outcome(jws.decode_parts_claimed, not_object, never, TYPS), str)
    none_alg = signer.forge({"alg": "none", "typ": TYP, "kid": "k1"}, b"{}")
    assert _outcome(jws.decode_parts_claimed, none_alg, never, TYPS) == "alg not allowed"


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "...", "a", "a.b", "a.b.", ".a.b", "a..b", "a.b.c.d", "a..", "..a", "a.b..c"],
)
def test_decode_splits_as_split(token: str) -> None:
    def resolver(_kid: str) -> nacl.signing.VerifyKey:
        raise AssertionError("resolve_key called for a token without three segments")

    expected = _outcome(jws._split, token, 100)
    if isinstance(expected, tuple):  # three non-empty segments: refused later, not here
        assert _outcome(jws.decode_parts, token, resolver, TYPS) != "token must have 3 segments"
    else:
        assert _outcome(jws.decode_parts, token, resolver, TYPS) == expected


def test_token_signature_covers_exactly_the_signing_input(monkeypatch: pytest.MonkeyPatch) -> None:
    key = nacl.signing.SigningKey.generate()
    signature = key.sign(b"head.body").signature
    raw = b"head.body.rest"
    for libsodium in (True, False):
        if not libsodium:
            monkeypatch.setattr(jws, "_sodium_open", None)
        assert jws._verify_token_signature(raw, 9, signature, key.verify_key)
        for length in (8, 10, len(raw), 0, -1, len(raw) + 1):
            assert not jws._verify_token_signature(raw, length, signature, key.verify_key)
        assert not jws._verify_token_signature(raw, 9, signature[:-1], key.verify_key)
        assert not jws._verify_token_signature(raw, 9, signature, key)  # type: ignore[arg-type]


# -- detached signatures -------------------------------------------------------------


def test_verify_detached_never_raises() -> None:
    key = nacl.signing.SigningKey.generate()
    signature = jws.sign_detached(b"m", key)
    assert len(signature) == 64
    assert jws.verify_detached(b"m", signature, key.verify_key)
    assert not jws.verify_detached(b"m", signature[:-1], key.verify_key)
    assert not jws.verify_detached(b"m", signature + b"\x00", key.verify_key)
    assert not jws.verify_detached(b"m", b"", key.verify_key)
    assert not jws.verify_detached(b"m", bytes(64), key.verify_key)
    assert not jws.verify_detached(b"n", signature, key.verify_key)
    assert not jws.verify_detached(b"m", signature.hex(), key.verify_key)  # type: ignore[arg-type]
    assert not jws.verify_detached("m", signature, key.verify_key)  # type: ignore[arg-type]
    other = nacl.signing.SigningKey.generate().verify_key
    assert not jws.verify_detached(b"m", signature, other)


# -- properties ----------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_json_objects = st.dictionaries(st.text(max_size=8), _json_values, max_size=6)
_PROPERTY_SIGNER = Signer(kid="prop")


@settings(max_examples=200, deadline=None)
@given(claims=_json_objects, compact=st.booleans())
def test_round_trip_any_json_object(claims: dict[str, Any], compact: bool) -> None:
    payload = (
        json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        if compact
        else json.dumps(claims).encode()
    )
    token = jws.encode(payload, typ=TYP, kid="prop", key=_PROPERTY_SIGNER.key)
    decoded = _PROPERTY_SIGNER.decode(token, max_bytes=1 << 20)
    assert decoded.claims == claims
    assert (decoded.typ, decoded.kid) == (TYP, "prop")


@settings(max_examples=100, deadline=None)
@given(claims=_json_objects, data=st.data())
def test_any_single_byte_flip_is_refused(claims: dict[str, Any], data: st.DataObject) -> None:
    token = jws.encode(_compact(claims), typ=TYP, kid="prop", key=_PROPERTY_SIGNER.key)
    raw = bytearray(token.encode("ascii"))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    raw[index] ^= mask
    with pytest.raises(JWSError):
        _PROPERTY_SIGNER.decode(raw.decode("latin-1"), max_bytes=1 << 20)


def test_every_single_character_change_is_refused(signer: Signer) -> None:
    # Exhaustive over positions for one token, with the replacements most likely to slip
    # through (neighbouring characters share high bits).
    token = signer.token({"sub": "a", "n": 1})
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    for i, char in enumerate(token):
        if char == ".":
            continue
        j = alphabet.index(char)
        for k in {j ^ 1, j ^ 2, j ^ 3, (j + 16) % 64}:
            other = token[:i] + alphabet[k] + token[i + 1 :]
            with pytest.raises(JWSError):
                signer.decode(other)


def test_public_surface() -> None:
    assert sorted(jws.__all__) == sorted(
        [
            "ALGORITHM",
            "KNOWN_KEY_ALGORITHMS",
            "MAX_TOKEN_BYTES",
            "Decoded",
            "JWSError",
            "b64url_decode",
            "b64url_encode",
            "decode",
            "decode_embedded_key",
            "decode_parts",
            "decode_parts_claimed",
            "decode_unverified",
            "decode_with_key",
            "encode",
            "jwk_thumbprint",
            "media_type",
            "payload_object",
            "sign_detached",
            "verify_detached",
            "verify_raw",
        ]
    )
    assert jws.MAX_TOKEN_BYTES == 8192


def test_verify_raw_answers_as_verify_detached() -> None:
    key = nacl.signing.SigningKey(b"r" * 32)
    public = bytes(key.verify_key)
    signature = jws.sign_detached(b"message", key)
    assert jws.verify_raw(b"message", signature, public)
    assert jws.verify_detached(b"message", signature, key.verify_key)
    other = bytes(nacl.signing.SigningKey(b"s" * 32).verify_key)
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    for args in (
        (b"messagf", signature, public),
        (b"message", bad, public),
        (b"message", signature, other),
        (b"message", signature[:63], public),
        (b"message", signature, public[:31]),
        (b"message", "not bytes", public),
    ):
        assert not jws.verify_raw(*args)  # type: ignore[arg-type]


def test_jwk_thumbprint_rfc8037_vector() -> None:
    # RFC 8037 appendix A.3: the thumbprint of the appendix A.1 public key.
    assert jws.jwk_thumbprint(b64url_decode(RFC8037_X)) == (
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )
    with pytest.raises(ValueError, match="32 bytes"):
        jws.jwk_thumbprint(b"\x00" * 31)


def test_jwk_thumbprint_is_the_key_rings() -> None:
    from tasklease.core.keys import jwk_thumbprint as key_ring_thumbprint

    key = bytes(nacl.signing.SigningKey.generate().verify_key)
    assert jws.jwk_thumbprint(key) == key_ring_thumbprint(key)


def test_json_paths_agree_with_and_without_msgspec() -> None:
    samples = [b'{"a":1}', b'{"a": 1}', b'{"a":1,"a":2}', b"[1]", b'{"x":"\\u00e9"}', b"{"]
    for data in samples:
        try:
            fast: Any = _codec.json_object(data, "payload")
        except JWSError as exc:
            fast = exc.reason
        try:
            strict: Any = _codec.json_object_strict(data, "payload")
        except JWSError as exc:
            strict = exc.reason
        assert fast == strict, data
