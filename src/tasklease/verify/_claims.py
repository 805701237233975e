"""Verified claims of an agent access token, typed, and the checks made on them.

Mirrors ``tasklease.core.tokens.claims_from_payload`` and ``core.validation`` (which need
the server's dependencies); ``tests/verify`` holds the two to the same answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.core import scopes as scope_rules
from tasklease.verify._errors import InvalidToken

__all__ = ["DelegationHop", "VerifiedToken", "chain_hash", "check_claims", "parse_claims"]


@dataclass(frozen=True, slots=True)
class DelegationHop:
    """One delegation hop: ``agent`` (holding ``scope``) delegated at ``delegated_at``."""

    agent: str
    scope: tuple[str, ...]
    delegated_at: str
    signature: str


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature, issuer, audience, lifetime, chain and revocation checked out.

    ``claims`` is the payload as sent. ``scope`` is the token's scope list
    (``action:resource:identifier``); :meth:`has_scope` applies tasklease's wildcard rule.
    """

    sub: str
    client_id: str
    scope: tuple[str, ...]
    aud: tuple[str, ...]
    iss: str
    exp: int
    nbf: int
    iat: int
    jti: str
    task_id: str
    orch_id: str
    delegation_chain: tuple[DelegationHop, ...]
    chain_hash: str
    claims: Mapping[str, Any]

    @property
    def depth(self) -> int:
        """How many delegation hops led to this token (0 for an agent's own token)."""
        return len(self.delegation_chain)

    def has_scope(self, required: str) -> bool:
        """True when one of the token's scopes covers ``required``.

        ``read:data:*`` covers ``read:data:42``; nothing covers another action or resource.
        """
        return scope_rules.is_subset([required], self.scope)


def chain_hash(chain: tuple[DelegationHop, ...]) -> str:
    """SHA-256 (hex) of the compact JSON array of the chain's records, keys in wire order."""
    records = [
        {
            "agent": hop.agent,
            "scope": list(hop.scope),
            "delegated_at": hop.delegated_at,
            "signature": hop.signature,
        }
        for hop in chain
    ]
    encoded = json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def _str(payload: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = payload.get(key, "")
    if type(value) is not str or (required and not value):
        raise InvalidToken(f"claim {key} missing or not a string")
    return value


def _int(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if type(value) is not int:
        raise InvalidToken(f"claim {key} missing or not an integer")
    return value


def _strings(payload: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = payload.get(key)
    if type(value) is not list or not all(type(v) is str for v in value):
        raise InvalidToken(f"claim {key} missing or not a list of strings")
    return tuple(value)


def parse_claims(payload: dict[str, Any]) -> VerifiedToken:
    """Type-check a verified payload. Raises :class:`InvalidToken` naming the bad claim."""
    raw_chain = payload.get("delegation_chain", [])
    if type(raw_chain) is not list:
        raise InvalidToken("claim delegation_chain is not a list")
    hops = []
    for item in raw_chain:
        if type(item) is not dict:
            raise InvalidToken("delegation record is not an object")
        hops.append(
            DelegationHop(
                agent=_str(item, "agent", required=True),
                scope=_strings(item, "scope"),
                delegated_at=_str(item, "delegated_at", required=True),
                signature=_str(item, "signature", required=True),
            )
        )
    aud = payload.get("aud")
    audiences = (aud,) if type(aud) is str else _strings(payload, "aud")
    return VerifiedToken(
        sub=_str(payload, "sub", required=True),
        client_id=_str(payload, "client_id", required=True),
        scope=_strings(payload, "scope"),
        aud=audiences,
        iss=_str(payload, "iss", required=False),
        exp=_int(payload, "exp"),
        nbf=_int(payload, "nbf"),
        iat=_int(payload, "iat"),
        jti=_str(payload, "jti", required=True),
        task_id=_str(payload, "task_id", required=False),
        orch_id=_str(payload, "orch_id", required=False),
        delegation_chain=tuple(hops),
        chain_hash=_str(payload, "chain_hash", required=False),
        claims=payload,
    )


def check_claims(
    token: VerifiedToken,
    *,
    issuer: str,
    audience: str,
    now: float,
    skew: int,
    max_lifetime: int,
    max_depth: int,
) -> None:
    """The claim checks of ``core.validation``, in its order. Raises :class:`InvalidToken`."""
    if not hmac.compare_digest(token.iss.encode(), issuer.encode()):
        raise InvalidToken("issuer mismatch")
    if audience not in token.aud:
        raise InvalidToken("audience mismatch")
    if "cnf" in token.claims:
        # A sender-constrained token (RFC 8705 / RFC 9449) accepted without checking its
        # binding would be a bearer token again: refuse until binding checks exist here.
        raise InvalidToken("sender-constrained token: binding is not checked by this verifier")
    check_time(token, now, skew)
    if token.exp <= token.iat or token.exp - token.iat > max_lifetime:
        raise InvalidToken("token lifetime outside the allowed range")
    if token.delegation_chain:
        if len(token.delegation_chain) > max_depth:
            raise InvalidToken("delegation chain longer than the depth limit")
        if not hmac.compare_digest(token.chain_hash, chain_hash(token.delegation_chain)):
            raise InvalidToken("delegation chain hash mismatch")
    elif token.chain_hash:
        raise InvalidToken("chain_hash without a delegation chain")


def check_time(token: VerifiedToken, now: float, skew: int) -> None:
    """``exp``, ``nbf`` and ``iat`` against ``now`` with ``skew`` seconds of tolerance."""
    if now > token.exp + skew:
        raise InvalidToken("token expired")
    if now + skew < token.nbf:
        raise InvalidToken("token not yet valid")
    if now + skew < token.iat:
        raise InvalidToken("token issued in the future")
