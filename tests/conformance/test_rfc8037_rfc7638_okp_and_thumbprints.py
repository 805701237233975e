"""RFC 8037 (CFRG curves in JOSE: Ed25519, EdDSA) and RFC 7638 (JWK thumbprints).

The broker's published keys, its signatures and the thumbprints it computes (key ids,
DPoP ``cnf.jkt``), each checked against independent implementations: PyJWT and joserfc.
"""

from __future__ import annotations

import hashlib
import json

import jwt as pyjwt
import pytest
from conformance_support import DEFAULT_AUDIENCE, ISSUER, Kit, b64url, b64url_decode, parts
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import OKPKey

NOT_APPLICABLE = {
    "rfc8037 s2 X25519/X448 (ECDH-ES)": "no key agreement: keys only sign",
    "rfc8037 s3 Ed448": "one curve, Ed25519: agents and the AgentWrit SDK use it",
}


def test_rfc8037_s2_published_keys_are_okp_ed25519_public_keys(kit: Kit) -> None:
    """§2: each JWK is `kty: OKP`, `crv: Ed25519`, `x` the 32-byte public key, no `d`."""
    for key in kit.jwks()["keys"]:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519"
        assert len(b64url_decode(key["x"])) == 32
        assert "d" not in key


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # RFC 9864's name
def test_rfc8037_s3_1_eddsa_signatures_verify_with_independent_libraries(kit: Kit) -> None:
    """§3.1: `alg: EdDSA` over Ed25519, verified by PyJWT and joserfc from the JWKS."""
    token = kit.register().token
    kid = parts(token)[0]["kid"]
    jwk = next(k for k in kit.jwks()["keys"] if k["kid"] == kid)
    claims = pyjwt.decode(
        token, pyjwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=DEFAULT_AUDIENCE,
        issuer=ISSUER,
    )  # fmt: skip
    assert claims == joserfc_jwt.decode(token, OKPKey.import_key(jwk), algorithms=["EdDSA"]).claims


def _thumbprint(jwk: dict[str, str]) -> str:
    members = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def test_rfc7638_s3_key_ids_are_thumbprints(kit: Kit) -> None:
    """§3: each published key's `kid` is its SHA-256 JWK thumbprint (required members
    `crv`, `kty`, `x` in lexicographic order, no whitespace), as joserfc computes it."""
    for key in kit.jwks()["keys"]:
        assert key["kid"] == _thumbprint(key)
        assert key["kid"] == OKPKey.import_key(key).thumbprint()


def test_rfc7638_s3_1_dpop_jkt_is_the_proof_keys_thumbprint(kit: Kit) -> None:
    """§3.1 (RFC 9449 §6.1): `cnf.jkt` is the thumbprint of the DPoP proof's JWK."""
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(agent.dpop.verify_key))}
    assert parts(agent.token)[1]["cnf"] == {"jkt": OKPKey.import_key(jwk).thumbprint()}


def test_rfc7638_s3_agent_jwk_kid_is_its_thumbprint(kit: Kit) -> None:
    """§3: the agent's registered key in its token (`agent_jwk`) carries its thumbprint."""
    agent_jwk = parts(kit.register().token)[1]["agent_jwk"]
    assert agent_jwk["kid"] == OKPKey.import_key(agent_jwk).thumbprint()
