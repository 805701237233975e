"""Tokens the broker mints verify with PyJWT and joserfc: we speak standard JWS/JWT."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey

from tasklease.core.clock import ManualClock
from tasklease.core.tokens import KIND_ADMIN, KIND_AGENT


@pytest.fixture
def live(make_broker: Any, kit: Any) -> Any:
    """A broker whose clock starts at the real time, so third-party exp/iat checks pass."""
    broker = make_broker(clock=ManualClock(float(int(time.time()))))
    launch = kit.launch(broker, ["read:data:*"], single_use=False, ttl=600)
    a = kit.register(broker, launch)
    b = kit.register(broker, launch)
    delegated = broker.delegate(
        a.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    return broker, a, delegated


def segment(token: str, i: int) -> dict[str, Any]:
    raw = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


def public_key(broker: Any) -> Ed25519PublicKey:
    raw = broker.keyring.public_key(broker.keyring.active_kid)
    return Ed25519PublicKey.from_public_bytes(raw)


def test_header_is_exactly_alg_typ_kid(live: Any, kit: Any) -> None:
    broker, agent, _ = live
    kid = broker.keyring.active_kid
    assert segment(agent.token, 0) == {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    assert list(segment(agent.token, 0)) == ["alg", "typ", "kid"]
    assert pyjwt.get_unverified_header(agent.token) == {
        "alg": "EdDSA",
        "typ": KIND_AGENT,
        "kid": kid,
    }
    admin = kit.admin(broker)
    assert segment(admin.token, 0) == {"alg": "EdDSA", "typ": KIND_ADMIN, "kid": kid}
    # No padding anywhere: base64url as RFC 7515 section 2 says.
    assert "=" not in agent.token


def test_pyjwt_verifies_agent_token(live: Any) -> None:
    broker, agent, delegated = live
    for issued in (agent.issued, delegated):
        claims = pyjwt.decode(
            issued.token,
            key=public_key(broker),
            algorithms=["EdDSA"],
            audience="tasklease",
            issuer="tasklease",
        )
        assert claims == issued.claims.raw
        # A delegated token's holder is its current actor (RFC 8693 section 4.1).
        assert claims.get("act", claims)["sub"] == issued.claims.sub
        assert claims["scope"] == " ".join(issued.claims.scope)  # RFC 9068 section 2.2.3.1
        assert claims["aud"] == ["tasklease"]
        assert claims["nbf"] == claims["iat"]
    assert (
        pyjwt.decode(
            agent.token, key=public_key(broker), algorithms=["EdDSA"], audience="tasklease"
        )["rnc"]
        == 0
    )


def test_pyjwt_rejects_a_tampered_token(live: Any) -> None:
    broker, agent, _ = live
    head, body, sig = agent.token.split(".")
    payload = segment(agent.token, 1)
    payload["scope"] = ["read:data:*", "write:data:*"]
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(
            f"{head}.{forged_body}.{sig}",
            key=public_key(broker),
            algorithms=["EdDSA"],
            audience="tasklease",
        )


def test_joserfc_verifies_agent_token(live: Any) -> None:
    broker, agent, delegated = live
    jwk = next(k for k in broker.keyring.jwks()["keys"] if k["kid"] == broker.keyring.active_kid)
    key = OKPKey.import_key(jwk)
    for issued in (agent.issued, delegated):
        with warnings.catch_warnings():
            # RFC 9864 renames the Ed25519 use of "EdDSA"; AgentWrit's wire format keeps it.
            warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
            token = jose_jwt.decode(issued.token, key, algorithms=["EdDSA"])
        jose_jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": "tasklease"},
            aud={"essential": True, "value": "tasklease"},
            now=int(broker.clock.now()),
        ).validate(token.claims)
        assert token.header == {"alg": "EdDSA", "typ": "at+jwt", "kid": broker.keyring.active_kid}
        assert token.claims == issued.claims.raw


def test_jwks_matches_the_signing_key(live: Any) -> None:
    broker, _, _ = live
    (jwk,) = broker.keyring.jwks()["keys"]
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert jwk["alg"] == "EdDSA"
    assert "d" not in jwk
    x = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    assert x == broker.keyring.public_key(jwk["kid"])
