"""Fixed keys, a broker-signed root token and presenter proofs for the offline chain tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import nacl.signing

from tasklease.rules import jws
from tasklease.rules.binding import DPoPVerifier, Presentation, access_token_hash
from tasklease.rules.chainverify import VerifiedChain, offline_limits, verify_chain

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
ISSUER = "tasklease"
TRUST = "spiffe://example.org/agent/orch-1/task-42"
HTU = "https://orders.example/v1/orders"


def key(name: str) -> nacl.signing.SigningKey:
    """A fixed Ed25519 key: the seed is SHA-256 of its name."""
    return nacl.signing.SigningKey(hashlib.sha256(name.encode()).digest())


BROKER = key("broker")
BROKER_KID = jws.jwk_thumbprint(bytes(BROKER.verify_key))


def agent_id(name: str) -> str:
    return f"{TRUST}/{name}"


def nested(*names: str) -> str:
    """The name of the last of ``names`` in a chain through them all: the first's agent id,
    then one segment per delegate (a block's ``sub`` is nested under its signer's)."""
    return "/".join((agent_id(names[0]), *names[1:]))


def public(name: str) -> bytes:
    return bytes(key(name).verify_key)


def resolve(kid: str) -> nacl.signing.VerifyKey | None:
    return BROKER.verify_key if kid == BROKER_KID else None


def root_token(
    *,
    holder: str = "root",
    scope: Sequence[str] = ("read:orders:*", "write:orders:42"),
    details: Sequence[Mapping[str, Any]] = (),
    aud: Sequence[str] = ("https://orders.example", "https://billing.example"),
    iat: int = NOW,
    ttl: int = 900,
    jti: str = "a" * 32,
    extra: Mapping[str, Any] | None = None,
    signer: nacl.signing.SigningKey = BROKER,
    kid: str = BROKER_KID,
) -> str:
    """An agent access token as the broker mints it (``core.tokens.mint``'s claims)."""
    public_key = public(holder)
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": agent_id(holder),
        "aud": list(aud),
        "exp": iat + ttl,
        "nbf": iat,
        "iat": iat,
        "jti": jti,
        "scope": " ".join(scope),
        "task_id": "task-42",
        "orch_id": "orch-1",
        "client_id": agent_id(holder),
        "oiat": iat,
        "rnc": 0,
        "principal": "user:alice@example.org",
        "agent_jwk": {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": jws.b64url_encode(public_key),
            "kid": jws.jwk_thumbprint(public_key),
        },
        "lineage": ["app:app-1"],
        "max_exp": iat + 3600,
        # Bound to its holder's key (DPoP), as every chain's root must be.
        "cnf": {"jkt": jws.jwk_thumbprint(public_key)},
    }
    if details:
        payload["authorization_details"] = [dict(d) for d in details]
    payload.update(extra or {})
    data = json.dumps(payload, separators=(",", ":")).encode()
    return jws.encode(data, typ="at+jwt", kid=kid, key=signer)


def proof(
    holder: str,
    chain: str,
    *,
    iat: int = NOW + 1,
    jti: str = "p-1",
    htm: str = "GET",
    htu: str = HTU,
) -> str:
    """A DPoP proof (RFC 9449) by ``holder``'s key over ``chain``."""
    signer = key(holder)
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(public(holder))},
    }
    claims = {"jti": jti, "htm": htm, "htu": htu, "iat": iat, "ath": access_token_hash(chain)}
    h = jws.b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    c = jws.b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signature = signer.sign(f"{h}.{c}".encode()).signature
    return f"{h}.{c}.{jws.b64url_encode(signature)}"


def presented(holder: str, chain: str, **kwargs: Any) -> Presentation:
    return Presentation(
        scheme="DPoP", dpop_proof=proof(holder, chain, **kwargs), htm="GET", htu=HTU
    )


def verify(
    chain: str,
    *,
    holder: str,
    now: float = NOW + 1,
    audiences: Sequence[str] | None = ("https://orders.example",),
    revoked: Any = None,
    depth: int = 5,
    presentation: Presentation | None = None,
    dpop: DPoPVerifier | None = None,
) -> VerifiedChain:
    """Verify ``chain`` as a resource server would, presented by ``holder``."""
    return verify_chain(
        chain,
        resolve_key=resolve,
        issuer=ISSUER,
        audiences=audiences,
        now=now,
        limits=offline_limits(max_ttl=3600, max_delegation_depth=depth),
        max_lifetime=3600,
        presented=presented(holder, chain, iat=int(now)) if presentation is None else presentation,
        dpop=DPoPVerifier(60) if dpop is None else dpop,
        revoked=revoked,
    )


def hops(names: Sequence[str], *, root: str | None = None, ttl: int = 600, **first: Any) -> str:
    """A chain from ``root`` (default: a fresh root token of ``names[0]``) through every
    name in turn, each block derived by the previous holder and naming its delegate under
    its own name (:func:`nested`); ``first`` narrows the first."""
    from tasklease.rules.chainverify import derive

    chain = root or root_token(holder=names[0])
    holder = agent_id(names[0])
    for index, (giver, taker) in enumerate(zip(names, names[1:], strict=False)):
        holder = f"{holder}/{taker}"
        chain = derive(
            chain,
            key(giver),
            delegate=holder,
            delegate_key=public(taker),
            now=NOW,
            ttl=ttl,
            jti=f"{index + 1:032x}",
            **(first if index == 0 else {}),
        )
    return chain


def raw_block(chain: str, signer: str, **fields: Any) -> str:
    """``chain`` with a block of exactly ``fields``, signed by ``signer`` and not checked:
    what a dishonest holder could write."""
    from tasklease.rules.attenuation import append_block, block_payload

    return append_block(chain, block_payload(**fields), key(signer))
