"""SPIFFE trust bundles (tasklease.rules.bundle): known answers with hand-made bundles,
refusals, and a round trip over generated bundles."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklease.rules.bundle import (
    MAX_BUNDLE_BYTES,
    MAX_BUNDLE_KEYS,
    BundleError,
    TrustBundle,
    jwt_svid_jwks,
    parse_bundle,
    serialize_bundle,
)
from tasklease.rules.jws import b64url_encode, jwk_thumbprint

# RFC 8037 appendix A.2: the Ed25519 public key of the RFC's example, and its RFC 7638
# thumbprint given in appendix A.3.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_KEY = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _okp(kid: str = RFC8037_KID, x: str = RFC8037_X, **extra: object) -> dict[str, object]:
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "jwt-svid", **extra}


def _doc(*keys: object, **members: object) -> bytes:
    return json.dumps({"keys": list(keys), **members}).encode()


def test_rfc8037_vector_key_and_thumbprint() -> None:
    # The fixture is the RFC's: its x decodes to its key, whose thumbprint is its kid.
    assert jwk_thumbprint(RFC8037_KEY) == RFC8037_KID
    assert b64url_encode(RFC8037_KEY) == RFC8037_X


def test_known_answer_hand_made_bundle() -> None:
    # As a peer broker publishes it, with an X.509 authority and an EC JWT key beside ours.
    text = (
        '{"keys":['
        '{"kty":"OKP","crv":"Ed25519","x":"' + RFC8037_X + '","kid":"' + RFC8037_KID + '",'
        '"use":"jwt-svid","alg":"EdDSA"},'
        '{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
        '"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ec-1","use":"jwt-svid"},'
        '{"kty":"RSA","use":"x509-svid","x5c":["MIIB"],"n":"AQAB","e":"AQAB"}'
        '],"spiffe_refresh_hint":300,"spiffe_sequence":18446744073709551615}'
    )
    bundle = parse_bundle(text, "a.example")
    assert bundle.trust_domain == "a.example"
    assert bundle.sequence == 2**64 - 1
    assert bundle.refresh_hint == 300
    assert dict(bundle.keys) == {RFC8037_KID: RFC8037_KEY}
    assert bundle.skipped == 2


def test_serialize_known_answer() -> None:
    bundle = TrustBundle("a.example", 7, 60, {RFC8037_KID: RFC8037_KEY})
    assert serialize_bundle(bundle) == (
        b'{"keys":[{"kty":"OKP","crv":"Ed25519","x":"' + RFC8037_X.encode() + b'","kid":"'
        + RFC8037_KID.encode() + b'","use":"jwt-svid","alg":"EdDSA"}],'
        b'"spiffe_refresh_hint":60,"spiffe_sequence":7}'
    )  # fmt: skip
    assert parse_bundle(serialize_bundle(bundle), "a.example") == bundle


def test_minimal_and_empty_bundles() -> None:
    # Sequence and hint are SHOULDs: absent is None. An empty key set is valid (it
    # makes every token of the domain invalid).
    bundle = parse_bundle(b'{"keys":[]}', "b.example")
    assert (bundle.sequence, bundle.refresh_hint, dict(bundle.keys)) == (None, None, {})
    assert serialize_bundle(bundle) == b'{"keys":[]}'


@pytest.mark.parametrize(
    ("jwk", "why"),
    [
        ({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "k"}, "missing use"),
        (_okp(use="sig"), "unknown use"),
        (_okp(use="JWT-SVID"), "use is case-sensitive"),
        ({**_okp(), "kty": "oct", "k": "c2VjcmV0"}, "a shared secret is no bundle key"),
        ({"kty": "oct", "k": "c2VjcmV0", "use": "jwt-svid"}, "an unknown kty needs no kid"),
        ({**_okp(), "kty": "AKP"}, "unknown kty"),
        (_okp(crv="X25519"), "not a signing curve"),
        (_okp(alg="ES256"), "declared for another algorithm"),
        (_okp(kid="has space"), "a kid no compact JWS header can carry"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "e", "use": "jwt-svid"}, "EC"),
        ({"kty": "RSA", "use": "x509-svid", "x5c": []}, "x509-svid"),
    ],
)
def test_skipped_jwks(jwk: dict[str, object], why: str) -> None:
    bundle = parse_bundle(_doc(jwk, _okp(kid="good")), "a.example")
    assert list(bundle.keys) == ["good"], why
    assert bundle.skipped == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"keys":[],"keys":[]}', "duplicate key"),
        (_doc(_okp(kid="a")).replace(b'"kid": "a"', b'"kid": "a", "kid": "b"'), "duplicate key"),
        (b'{"keys":[]', "invalid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"keys":[]} x', "invalid JSON"),
        (b"\xff", "not UTF-8"),
        (b'{"spiffe_sequence":1}', "keys must be an array"),
        (b'{"keys":{}}', "keys must be an array"),
        (_doc(spiffe_sequence=-1), "spiffe_sequence"),
        (_doc(spiffe_sequence=2**64), "spiffe_sequence"),
        (_doc(spiffe_sequence=1.0), "spiffe_sequence"),
        (_doc(spiffe_sequence="1"), "spiffe_sequence"),
        (_doc(spiffe_sequence=True), "spiffe_sequence"),
        (_doc(spiffe_refresh_hint=-5), "spiffe_refresh_hint"),
        (_doc(spiffe_refresh_hint=None), "spiffe_refresh_hint"),
        (_doc("not a key"), "not an object"),
        (_doc({"use": "jwt-svid", "kid": "k"}), "no kty"),
        (_doc({**_okp(), "use": 1}), "use is not a string"),
        (_doc({**_okp(), "kid": ""}), "needs a kid"),
        (_doc({k: v for k, v in _okp().items() if k != "kid"}), "needs a kid"),
        (_doc(_okp(), _okp()), "kid appears twice"),
        (_doc(_okp(d=RFC8037_X)), "private key"),
        (_doc(_okp(x=RFC8037_X + "=")), "not base64url"),
        (_doc(_okp(x="AAAA")), "32-byte"),
        (_doc({k: v for k, v in _okp().items() if k != "x"}), "needs x"),
        (_doc(*[_okp(kid=f"k{i}") for i in range(MAX_BUNDLE_KEYS + 1)]), "more than"),
        (b'{"keys":[],"pad":"' + b"a" * MAX_BUNDLE_BYTES + b'"}', "larger than"),
    ],
)
def test_refused_bundles(data: bytes, reason: str) -> None:
    with pytest.raises(BundleError) as caught:
        parse_bundle(data, "a.example")
    assert reason in caught.value.reason


def test_the_size_limit_is_exact() -> None:
    # A bundle of exactly MAX_BUNDLE_BYTES is read; one byte more is refused unread.
    head, tail = b'{"keys":[],"pad":"', b'"}'
    fits = head + b"a" * (MAX_BUNDLE_BYTES - len(head) - len(tail)) + tail
    assert len(fits) == MAX_BUNDLE_BYTES
    assert dict(parse_bundle(fits, "a.example").keys) == {}
    with pytest.raises(BundleError) as caught:
        parse_bundle(head + b"a" + fits[len(head) :], "a.example")
    assert "larger than" in caught.value.reason


def test_skipped_entries_count_toward_the_key_limit() -> None:
    # The bound is on the JWKs a peer serves, not only on the ones kept: a bundle of
    # X.509 authorities and one usable key, one entry too many, is refused.
    x509 = {"kty": "RSA", "use": "x509-svid", "x5c": []}
    with pytest.raises(BundleError) as caught:
        parse_bundle(_doc(*[x509] * MAX_BUNDLE_KEYS, _okp()), "a.example")
    assert "more than" in caught.value.reason
    assert list(parse_bundle(_doc(*[x509] * (MAX_BUNDLE_KEYS - 1), _okp()), "a.example").keys)


def test_a_bundle_value_holds_at_most_the_key_limit_and_cannot_be_changed() -> None:
    keys = {f"k{i}": bytes(32) for i in range(MAX_BUNDLE_KEYS + 1)}
    with pytest.raises(BundleError) as caught:
        TrustBundle("a.example", 1, 1, keys)
    assert "more than" in caught.value.reason
    given_keys = {"k": bytes(32)}
    bundle = TrustBundle("a.example", 1, 1, given_keys)
    given_keys["other"] = bytes(32)  # the caller's dict is copied, not kept
    assert list(bundle.keys) == ["k"]
    with pytest.raises(TypeError):
        bundle.keys["other"] = bytes(32)  # type: ignore[index]


def test_jwt_svid_jwks_are_the_jwt_svid_keys_of_a_valid_bundle_only() -> None:
    # For JWT-SVID verifiers: every jwt-svid key of a known type (EC here), never an
    # X.509 authority, a key without a use or a shared secret, even under a usable kty.
    ec = {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "e", "use": "jwt-svid"}
    others = [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "x", "use": "x509-svid"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "n"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "s", "use": "jwt-svid"},
    ]
    entries = jwt_svid_jwks(_doc(ec, _okp(), *others), "a.example")
    assert [dict(e) for e in entries] == [ec, _okp()]
    # The bundle is checked as a whole first: a duplicated kid or a private member in a
    # key it would not keep refuses it all.
    for refused in (_doc(ec, ec), _doc(ec, _okp(d=RFC8037_X))):
        with pytest.raises(BundleError):
            jwt_svid_jwks(refused, "a.example")


def test_refused_trust_domains() -> None:
    for name in ("", "A.example", "a example", "a/b", "x" * 256):
        with pytest.raises(BundleError):
            parse_bundle(b'{"keys":[]}', name)
    with pytest.raises(BundleError):
        TrustBundle("a.example", 1, 1, {"k": b"short"})
    with pytest.raises(BundleError):
        TrustBundle("a.example", 2**64, 1, {})


_kids = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
_bundles = st.builds(
    TrustBundle,
    trust_domain=st.from_regex(r"[a-z0-9._-]{1,60}", fullmatch=True),
    sequence=st.none() | st.integers(0, 2**64 - 1),
    refresh_hint=st.none() | st.integers(0, 2**64 - 1),
    keys=st.dictionaries(_kids, st.binary(min_size=32, max_size=32), max_size=8),
)


@settings(max_examples=200, deadline=None)
@given(_bundles)
def test_round_trip(bundle: TrustBundle) -> None:
    data = serialize_bundle(bundle)
    again = parse_bundle(data, bundle.trust_domain)
    assert again == bundle
    assert list(again.keys) == list(bundle.keys)  # the order is kept too
    assert serialize_bundle(again) == data


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["keys", "kty", "use", "kid", "x", "crv", "d", "alg",
                         "spiffe_sequence", "spiffe_refresh_hint"]),
        children,
        max_size=6,
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_is_parsed_or_refused(value: object) -> None:
    # Whatever a peer serves, the parser answers a bundle or BundleError, nothing else.
    try:
        bundle = parse_bundle(json.dumps(value), "a.example")
    except BundleError:
        return
    assert all(len(key) == 32 for key in bundle.keys.values())
