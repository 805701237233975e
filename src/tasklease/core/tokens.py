"""Token shapes: the kinds of JWT the broker mints, their claims, and minting.

Every token is a compact EdDSA JWS (``rules.jws``). The header ``typ`` names its kind, and
each verification path accepts only the kinds it expects, so an admin token can never be
used as an agent token or the reverse (RFC 8725 section 3.11).

Kinds (header ``typ``), each accepted only where that kind is expected:

=======================  ==================================================================
``at+jwt``               agent access tokens (RFC 9068 section 2.1)
``tasklease-admin+jwt``  operators' tokens (the admin secret's and named operators')
``tasklease-app+jwt``    app tokens
``dpop+jwt``             DPoP proofs (RFC 9449), minted by agents, verified by
                         ``core.binding`` against the key in their own header, never ours
=======================  ==================================================================

Delegation records and challenge responses are detached signatures over domain-separated
messages (``tasklease-delegation-v1``), not JWSs, so none can be read as a token.

Agent access tokens keep AgentWrit v2's claim names (``iss sub aud exp nbf iat jti scope
task_id orch_id delegation_chain chain_hash``), and add ``client_id`` (RFC 9068), ``oiat``
(the original registration time, which bounds renewal) and ``rnc`` (how many renewals led
to this token). ``scope`` is the space-delimited string of RFC 9068 section 2.2.3.1 (scope
tokens never contain spaces); the AgentWrit SDK reads scopes only from
``/v1/token/validate``, whose answer lists them as an array.

Agent tokens also carry ``principal`` (the human the work is done for, ``kind:value``) and
``agent_jwk`` (the holder's registered Ed25519 key as an RFC 8037 JWK, so peers can verify
its workload proofs offline; not ``cnf``, which ``core.binding`` uses for sender-constraint
by DPoP/mTLS). A delegated token is shaped as RFC 8693 section 4.1 has it: ``sub`` is the
subject on whose behalf it acts (the root delegator) and ``act`` the current actor (the
holder) outermost, each earlier actor (the later delegators) nested inside; built by
:func:`act_claim` from the verified chain, never from request input. :class:`Claims`'s
``sub`` is always the holder (AgentWrit's subject), read back by :func:`holder_of`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import msgspec

from tasklease.rules import jws as _jws
from tasklease.rules.claims import (
    ClaimRejected,
    DelegationRecord,
    act_actors,
    act_claim,
    chain_hash,
    delegation_chain_of,
    holder_of,
    int_claim,
    lineage_of,
    scope_claim,
    standing_claims,
    string_claim,
    strings_claim,
)
from tasklease.rules.grants import GrantError, details_of
from tasklease.rules.jws import jwk_thumbprint

__all__ = [
    "ADMIN_SCOPES",
    "APP_SCOPES",
    "BUILTIN_ADMIN",
    "KIND_ADMIN",
    "KIND_AGENT",
    "KIND_APP",
    "KIND_DPOP_PROOF",
    "OPERATORS_SCOPE",
    "OPERATOR_JTI_PREFIX",
    "ROLES",
    "ROLE_SCOPES",
    "Claims",
    "ClaimsError",
    "DelegationRecord",
    "Signer",
    "act_actors",
    "act_claim",
    "agent_jwk",
    "agent_key_of",
    "chain_hash",
    "claims_from_payload",
    "mint",
    "new_jti",
    "token_type_of",
]

KIND_AGENT = "at+jwt"
KIND_ADMIN = "tasklease-admin+jwt"
KIND_APP = "tasklease-app+jwt"
KIND_DPOP_PROOF = "dpop+jwt"

ADMIN_SCOPES = ("admin:launch-tokens:*", "admin:revoke:*", "admin:audit:*")
OPERATORS_SCOPE = "admin:operators:*"  # managing operators: the admin role's
OPERATOR_JTI_PREFIX = "op-"  # how the id of an operator's token (kind admin) starts
APP_SCOPES = ("app:launch-tokens:*", "app:agents:*", "app:audit:read")

# Operators' roles and the scopes their tokens (kind ``tasklease-admin+jwt``, ``sub``
# ``operator:<name>``) carry. ``operator`` holds exactly what AgentWrit's admin token holds
# (apps and launch tokens, revocation, the audit log); ``admin`` adds managing operators
# and rotating signing keys; ``auditor`` only reads the audit log.
ROLE_SCOPES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "admin": (*ADMIN_SCOPES, OPERATORS_SCOPE, "admin:keys:*", "admin:tenants:*"),
        "operator": ADMIN_SCOPES,
        "auditor": ("admin:audit:*",),
    }
)
ROLES = tuple(ROLE_SCOPES)
# The subject of the token minted for the admin secret (``POST /v1/admin/auth``). Its
# ``scope`` claim stays AgentWrit's ADMIN_SCOPES; it holds the ``admin`` role's scopes.
BUILTIN_ADMIN = "admin"

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of a token, typed. ``raw`` is the decoded payload as sent."""

    kind: str
    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: int
    nbf: int
    iat: int
    jti: str
    scope: tuple[str, ...]
    task_id: str
    orch_id: str
    client_id: str
    oiat: int
    rnc: int
    delegation_chain: tuple[DelegationRecord, ...]
    chain_hash: str
    raw: dict[str, Any]
    principal: str = ""
    # The lineage (core.kernel): ancestors whose end ends this token, oldest first;
    # the grant (renewal thread) this token belongs to; the latest ``exp`` any token of
    # the lineage may have (0: none recorded, older tokens).
    lineage: tuple[str, ...] = ()
    grant: str = ""
    max_exp: int = 0
    # Structured grants besides ``scope`` (RFC 9396 ``authorization_details``, as
    # ``rules.grants`` checks them); () for a token with scopes only.
    details: tuple[Mapping[str, Any], ...] = ()
    # For a by-reference token, the SHA-256 it was presented and looked up by
    # (``rules.messages.reference_hash``); "" for a signed token. Not a claim.
    reference: str = ""

    @property
    def depth(self) -> int:
        return len(self.delegation_chain)

    @property
    def grant_id(self) -> str:
        """The grant this token continues: its first token's ``jti``."""
        return self.grant or self.jti


def token_type_of(claims: Claims) -> str:
    """How the token is presented: ``DPoP`` when bound to a DPoP key (RFC 9449 section
    5), else ``Bearer`` (RFC 6750); the ``token_type`` of every answer that issues it."""
    cnf = claims.raw.get("cnf")
    return "DPoP" if isinstance(cnf, dict) and "jkt" in cnf else "Bearer"


def new_jti() -> str:
    """16 random bytes as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def agent_jwk(public_key: bytes) -> dict[str, str]:
    """The RFC 8037 public JWK of a registered Ed25519 key (``kid``: RFC 7638 thumbprint)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _jws.b64url_encode(public_key),
        "kid": jwk_thumbprint(public_key),
    }


def agent_key_of(payload: dict[str, Any]) -> bytes | None:
    """The raw Ed25519 key in a verified payload's ``agent_jwk``, or None if absent/bad."""
    jwk = payload.get("agent_jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    x = jwk.get("x")
    try:
        raw = _jws.b64url_decode(x) if isinstance(x, str) else b""
    except _jws.JWSError:
        return None
    return raw if len(raw) == 32 else None


class Signer(Protocol):
    """What signs a token: a :class:`~tasklease.core.keys.KeyRing`, or the broker's
    ``SigningKeys``, which also tells its validator what it signed."""

    def sign(self, payload: bytes, typ: str) -> str: ...


def mint(
    keyring: Signer,
    *,
    kind: str,
    iss: str,
    sub: str,
    aud: tuple[str, ...],
    iat: int,
    ttl: int,
    scope: tuple[str, ...],
    client_id: str,
    task_id: str = "",
    orch_id: str = "",
    oiat: int | None = None,
    rnc: int = 0,
    delegation_chain: tuple[DelegationRecord, ...] = (),
    jti: str | None = None,
    cnf: dict[str, str] | None = None,
    principal: str = "",
    agent_key: bytes | None = None,
    lineage: tuple[str, ...] = (),
    grant: str = "",
    max_exp: int = 0,
    attest: Mapping[str, Any] | None = None,
    details: tuple[Mapping[str, Any], ...] = (),
) -> tuple[str, Claims]:
    """Build, sign and return ``(token, claims)``. ``nbf`` equals ``iat``.

    ``sub`` is the holder. ``cnf`` (RFC 7800), when given, binds the token to its holder's
    key: ``x5t#S256`` (RFC 8705 section 3.1) and/or ``jkt`` (RFC 9449 section 6.1).

    Agent tokens with a ``principal`` carry it; delegated ones the root delegator as
    ``sub`` and the ``act`` chain derived from ``delegation_chain``; ``agent_key`` adds
    ``agent_jwk``. ``lineage``,
    ``grant`` and ``max_exp`` record where the token descends from (``core.kernel``);
    ``grant`` is left out when it is the token's own ``jti``. ``details`` are its
    structured grants, the ``authorization_details`` claim (RFC 9396 section 9.1).
    """
    # An operator's token says so in its id, so that revoking one by its id can be held
    # to the rule for operators' tokens (core.revoking).
    jti = jti or (OPERATOR_JTI_PREFIX + new_jti() if kind == KIND_ADMIN else new_jti())
    payload: dict[str, Any] = {
        "iss": iss,
        # A delegated token's subject is the root delegator; its holder is the actor
        # (RFC 8693 section 4.1, act_claim).
        "sub": delegation_chain[0].agent if delegation_chain else sub,
        "aud": list(aud),
        "exp": iat + ttl,
        "nbf": iat,
        "iat": iat,
        "jti": jti,
        "scope": " ".join(scope),
    }
    if details:
        payload["authorization_details"] = [dict(d) for d in details]
    if task_id:
        payload["task_id"] = task_id
    if orch_id:
        payload["orch_id"] = orch_id
    payload["client_id"] = client_id
    c_hash = ""
    if delegation_chain:
        c_hash = chain_hash(delegation_chain)
        payload["delegation_chain"] = [r.as_json() for r in delegation_chain]
        payload["chain_hash"] = c_hash
    if kind == KIND_AGENT:
        payload["oiat"] = iat if oiat is None else oiat
        payload["rnc"] = rnc
        if principal:
            payload["principal"] = principal
        if delegation_chain:
            payload["act"] = act_claim(sub, delegation_chain)
        if agent_key is not None:
            payload["agent_jwk"] = agent_jwk(agent_key)
        if lineage:
            payload["lineage"] = list(lineage)
        if grant and grant != jti:
            payload["grant"] = grant
        if max_exp:
            payload["max_exp"] = max_exp
        if attest:
            # What the lineage's workload proved at registration (rules.attest).
            payload["attest"] = dict(attest)
    if cnf:
        payload["cnf"] = dict(cnf)
    token = keyring.sign(_encoder.encode(payload), kind)
    claims = Claims(
        kind=kind,
        iss=iss,
        sub=sub,
        aud=aud,
        exp=iat + ttl,
        nbf=iat,
        iat=iat,
        jti=jti,
        scope=scope,
        task_id=task_id,
        orch_id=orch_id,
        client_id=client_id,
        oiat=payload.get("oiat", iat),
        rnc=rnc,
        delegation_chain=delegation_chain,
        chain_hash=c_hash,
        raw=payload,
        principal=principal if kind == KIND_AGENT else "",
        lineage=tuple(lineage) if kind == KIND_AGENT else (),
        grant=payload.get("grant", ""),
        max_exp=payload.get("max_exp", 0),
        details=tuple(details),
    )
    return token, claims


class ClaimsError(ValueError):
    """A payload that is not a well-formed tasklease claim set (reason in ``args[0]``)."""


def claims_from_payload(kind: str, payload: dict[str, Any]) -> Claims:
    """Type-check a verified payload into :class:`Claims` (raises :class:`ClaimsError`).

    The readers are the shared rules' (:mod:`tasklease.rules.claims`), so the broker and
    every verifier read a claim the same way.
    """
    try:
        chain = delegation_chain_of(payload.get("delegation_chain", []))
        iat = int_claim(payload, "iat")
        oiat, rnc, grant, max_exp = standing_claims(payload, iat)
        lineage = lineage_of(payload["lineage"]) if "lineage" in payload else ()
        return Claims(
            kind=kind,
            iss=string_claim(payload, "iss", required=False),
            sub=holder_of(payload),
            aud=strings_claim(payload, "aud"),
            exp=int_claim(payload, "exp"),
            nbf=int_claim(payload, "nbf"),
            iat=iat,
            jti=string_claim(payload, "jti", required=True),
            scope=scope_claim(payload),
            task_id=string_claim(payload, "task_id", required=False),
            orch_id=string_claim(payload, "orch_id", required=False),
            client_id=string_claim(payload, "client_id", required=True),
            oiat=oiat,
            rnc=rnc,
            delegation_chain=chain,
            chain_hash=string_claim(payload, "chain_hash", required=False),
            raw=payload,
            principal=string_claim(payload, "principal", required=False),
            lineage=lineage,
            grant=grant,
            max_exp=max_exp,
            details=details_of(payload) if "authorization_details" in payload else (),
        )
    except ClaimRejected as exc:
        raise ClaimsError(exc.reason) from None
    except GrantError as exc:
        raise ClaimsError(f"authorization_details: {exc.reason}") from None
