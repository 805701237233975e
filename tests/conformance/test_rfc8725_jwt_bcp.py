"""RFC 8725: JSON Web Token Best Current Practices.

Attacks a broker and a resource server must refuse, each sent to the running broker
(``/v1/token/validate`` and a protected route) with a correctly signed token where the
attack needs one.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from conformance_support import Kit, b64url, parts

NOT_APPLICABLE = {
    "s3_3 cryptographic inputs": "no ECDH-ES or PBES2: tokens are signed with Ed25519 only",
    "s3_4 encryption": "tokens are not encrypted (JWS only)",
    "s3_6 compression before encryption": "no JWE, no compression",
    "s3_7 UTF-8": "covered by the JWS codec's strict decoder (tests/rules/test_jws.py)",
    "s3_12 mutually exclusive validation rules with one key": "the kinds share the broker's "
    "key and are told apart by typ (s3_11) and by each kind's own claim checks",
}


def _refused(kit: Kit, token: str) -> None:
    assert kit.validate(token) == {"valid": False, "error": "token is invalid or expired"}
    answer = kit.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401, answer.text


def test_rfc8725_s3_1_alg_none_is_refused(kit: Kit) -> None:
    """§3.1: `alg: none` (an unsecured JWT) is never accepted."""
    header, payload = parts(kit.register().token)
    head = b64url(json.dumps({**header, "alg": "none"}).encode())
    body = b64url(json.dumps(payload).encode())
    _refused(kit, f"{head}.{body}.")
    _refused(kit, f"{head}.{body}.AAAA")


def test_rfc8725_s3_1_algorithm_confusion_is_refused(kit: Kit) -> None:
    """§3.1 and §2.1: the algorithm is ours, never the header's: an HMAC "signature" keyed
    with the public key (HS256 confusion) is refused."""
    header, payload = parts(kit.register().token)
    public = kit.jwks()["keys"][0]["x"].encode()
    for alg in ("HS256", "RS256", "ES256", "Ed25519"):
        head = b64url(json.dumps({**header, "alg": alg}).encode())
        signing_input = f"{head}.{b64url(json.dumps(payload).encode())}"
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        _refused(kit, f"{signing_input}.{b64url(mac)}")


def test_rfc8725_s3_8_issuer_is_validated(kit: Kit) -> None:
    """§3.8: `iss` is checked against the broker's issuer."""
    header, payload = parts(kit.register().token)
    _refused(kit, kit.resign({**payload, "iss": "tasklease-elsewhere"}, header))


def test_rfc8725_s3_9_audience_is_validated(kit: Kit) -> None:
    """§3.9: `aud` must name the broker's audience (or the caller's, at validation)."""
    header, payload = parts(kit.register().token)
    stranger = kit.resign({**payload, "aud": ["https://stranger.example"]}, header)
    assert kit.validate(stranger)["valid"] is False
    assert kit.validate(stranger, audience="https://stranger.example")["valid"] is True
    assert kit.validate(kit.register().token, audience="https://stranger.example")["valid"] is False


def test_rfc8725_s3_10_kid_jku_x5u_are_not_followed(kit: Kit) -> None:
    """§3.10: header parameters that point at keys (`jku`, `x5u`, `jwk`, `x5c`) are refused,
    never followed; an unknown `kid` finds no key."""
    header, payload = parts(kit.register().token)
    for extra in (
        {"jku": "https://attacker.example/jwks"},
        {"x5u": "https://attacker.example/cert"},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}},
        {"x5c": ["MIIB"]},
    ):
        _refused(kit, kit.resign(payload, {**header, **extra}))
    _refused(kit, kit.resign(payload, {**header, "kid": "../../etc/passwd"}))
    _refused(kit, kit.resign(payload, {**header, "kid": "unknown-kid"}))


def test_rfc8725_s3_11_explicit_typing_keeps_kinds_apart(kit: Kit) -> None:
    """§3.11: each kind of JWT has its own `typ`, so none is accepted as another: an admin
    or app token is not an agent token, a WIT or a DPoP proof is no access token."""
    admin = kit.admin()["Authorization"].split(" ", 1)[1]
    assert parts(admin)[0]["typ"] == "tasklease-admin+jwt"
    assert kit.validate(admin)["valid"] is False
    app = kit.app_token()
    assert parts(app)[0]["typ"] == "tasklease-app+jwt"
    assert kit.validate(app)["valid"] is False
    agent = kit.register()
    wit = kit.post("/v1/workload/identity", headers=agent.bearer()).json()
    identity = wit["workload_identity_token"]
    assert parts(identity)[0]["typ"] == "wit+jwt"
    _refused(kit, identity)
