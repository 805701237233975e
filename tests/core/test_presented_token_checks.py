"""Checks on a presented token that each refuse on their own: holder binding at the
broker's own endpoints, introspection's live read, an offline chain's audience, the validator's
delegation depth."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import replace
from typing import Any

import pytest
from nacl.signing import SigningKey
from tests.core.test_validation import agent_token as minted

from tasklease.core.broker import RequestContext
from tasklease.core.errors import Unauthorized
from tasklease.core.tokens import DelegationRecord
from tasklease.core.validation import TokenRejected
from tasklease.rules import jws
from tasklease.rules.binding import Presentation
from tasklease.rules.chainverify import derive

CTX = RequestContext(request_id="req-p", remote="10.0.0.1", path="/v1/token/renew")
SUB = "spiffe://tasklease.local/agent/o/t/00000000000000bb"
THUMBPRINT = "c" * 43


def agent_token(broker: Any, **overrides: Any) -> str:
    return minted(broker, **{"sub": SUB, **overrides})


def test_authenticate_refuses_a_certificate_bound_token_without_its_certificate(
    broker: Any,
) -> None:
    token = agent_token(broker, cnf={"x5t#S256": THUMBPRINT})
    for ctx, reason in (
        (CTX, "without a client certificate"),
        (replace(CTX, cert_thumbprint="d" * 43), "with another certificate"),
    ):
        with pytest.raises(Unauthorized) as info:
            broker.authenticate(f"Bearer {token}", ctx)
        assert reason in info.value.reason
    holder = replace(CTX, cert_thumbprint=THUMBPRINT)
    assert broker.authenticate(f"Bearer {token}", holder).sub == SUB


def test_authenticate_refuses_a_dpop_bound_token_as_bearer_or_without_a_proof(
    broker: Any,
) -> None:
    token = agent_token(broker, cnf={"jkt": "k" * 43})
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(f"Bearer {token}", CTX)
    assert "presented as a bearer token" in info.value.reason
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(f"DPoP {token}", CTX)
    assert info.value.challenge is not None
    assert info.value.challenge[1] == "invalid_dpop_proof"


# -- introspection ------------------------------------------------------------------------

RESOURCE = "https://rs.example/api"


def test_introspection_reads_the_store_for_a_critical_scope(make_broker: Any, kit: Any) -> None:
    """An agent token with a critical scope whose holder has no agent record: the index
    alone would call it active; the live read refuses it."""
    broker = make_broker(critical_scopes=("write:pay:*",))
    token = agent_token(broker, scope=("write:pay:1",))
    ordinary = agent_token(broker)
    caller = kit.admin(broker).claims
    assert broker.introspect(caller, token=ordinary, ctx=CTX)["active"] is True
    assert broker.introspect(caller, token=token, ctx=CTX) == {"active": False}


def _offline_chain(broker: Any, kit: Any) -> tuple[str, SigningKey]:
    """A registered agent's token (audience ``tasklease``) attenuated once offline."""
    root = kit.register(broker, scope=("read:data:*",), dpop=True)
    leaf = SigningKey.generate()
    chain = derive(
        root.token,
        root.key,
        delegate=f"{root.sub}/off0",
        delegate_key=bytes(leaf.verify_key),
        now=int(broker.clock.now()),
        ttl=120,
        scope=["read:data:*"],
    )
    return chain, leaf


def _presented(key: SigningKey, token: str, now: float) -> Presentation:
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(key.verify_key))},
    }
    claims = {
        "jti": secrets.token_hex(12),
        "htm": "GET",
        "htu": RESOURCE,
        "iat": int(now),
        "ath": jws.b64url_encode(hashlib.sha256(token.encode()).digest()),
    }
    signing_input = ".".join(
        jws.b64url_encode(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    )
    proof = f"{signing_input}.{jws.b64url_encode(jws.sign_detached(signing_input.encode(), key))}"
    return Presentation(scheme="DPoP", dpop_proof=proof, htm="GET", htu=RESOURCE)


def test_introspecting_an_offline_chain_answers_for_the_audience_asked(
    broker: Any, kit: Any
) -> None:
    chain, _ = _offline_chain(broker, kit)
    caller = kit.admin(broker).claims
    assert broker.introspect(caller, token=chain, ctx=CTX)["active"] is True
    assert broker.introspect(caller, token=chain, audience="tasklease", ctx=CTX)["active"]
    assert broker.introspect(caller, token=chain, audience=RESOURCE, ctx=CTX) == {"active": False}


def test_validating_an_offline_chain_holds_it_to_the_resource_named(broker: Any, kit: Any) -> None:
    """RFC 8707: a chain whose audience is the broker's is refused by a resource server
    that names itself, as a signed token would be."""
    chain, leaf = _offline_chain(broker, kit)
    now = broker.clock.now()
    held = broker.validate(chain, audience="tasklease", presented=_presented(leaf, chain, now))
    assert held.raw["offline"]["blocks"] == 1
    with pytest.raises(TokenRejected) as info:
        broker.validate(chain, audience=RESOURCE, presented=_presented(leaf, chain, now))
    assert info.value.category == "audience"


# -- the validator's bounds ---------------------------------------------------------------


def _chain(hops: int) -> tuple[DelegationRecord, ...]:
    return tuple(
        DelegationRecord(
            agent=f"spiffe://tasklease.local/agent/o/t/{i:016x}",
            scope=("read:data:1",),
            delegated_at="2027-01-15T08:00:00Z",
            signature="00" * 64,
        )
        for i in range(1, hops + 1)
    )


def test_validate_bounds_the_delegation_depth_by_config(broker: Any) -> None:
    depth = broker.config.max_delegation_depth
    assert broker.validate(agent_token(broker, delegation_chain=_chain(depth))).sub == SUB
    with pytest.raises(TokenRejected) as info:
        broker.validate(agent_token(broker, delegation_chain=_chain(depth + 1)))
    assert info.value.reason == "delegation chain longer than the depth limit"
