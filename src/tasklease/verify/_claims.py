"""Verified claims of an agent access token, typed, and the checks made on them.

Mirrors ``tasklease.core.tokens.claims_from_payload`` and ``core.validation`` (which need
the server's dependencies); ``tests/verify`` holds the two to the same answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.core import scopes as scope_rules
from tasklease.verify._errors import InvalidToken

__all__ = [
    "DelegationHop",
    "VerifiedToken",
    "act_actors",
    "chain_hash",
    "check_claims",
    "claims_from_introspection",
    "parse_claims",
]

_CNF_MEMBERS = frozenset(("x5t#S256", "jkt"))


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

    ``claims`` is the payload as sent (for a by-reference token, the introspected claims
    with ``scope`` as a list). ``principal`` is the human the work is done for
    (``kind:value``, empty when the token names none); ``actors`` are the ``sub`` of every
    level of the RFC 8693 ``act`` claim, outermost first: the holder, the delegators from
    the last to the root, then the principal (empty for a token that is not delegated).
    ``by_reference`` is true for an opaque token resolved by introspection. ``scope`` is
    the token's scope list (``action:resource:identifier``); :meth:`has_scope` applies
    tasklease's wildcard rule.
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
    principal: str = ""
    actors: tuple[str, ...] = ()
    by_reference: bool = False

    @property
    def cnf(self) -> Mapping[str, str] | None:
        """The token's confirmation claim (RFC 7800) when it is sender-constrained."""
        cnf = self.claims.get("cnf")
        return cnf if isinstance(cnf, dict) else None

    @property
    def lineage(self) -> tuple[str, ...]:
        """The ancestors whose revocation ends this token (``lineage`` claim), oldest first."""
        value = self.claims.get("lineage")
        if type(value) is not list:
            return ()
        return tuple(v for v in value if type(v) is str)

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
    if type(value) is not list:
        raise InvalidToken(f"claim {key} missing or not a list of strings")
    for item in value:  # a plain loop: this is on the first-seen hot path
        if type(item) is not str:
            raise InvalidToken(f"claim {key} missing or not a list of strings")
    return tuple(value)


def parse_claims(payload: dict[str, Any], *, by_reference: bool = False) -> VerifiedToken:
    """Type-check a verified payload. Raises :class:`InvalidToken` naming the bad claim.

    This is on the first-seen hot path: one pass of inline type checks for a well-formed
    payload; anything else takes :func:`_parse_claims_checked`, which names the first bad
    claim in a fixed order.
    """
    try:
        sub, client_id, jti = payload["sub"], payload["client_id"], payload["jti"]
        exp, nbf, iat = payload["exp"], payload["nbf"], payload["iat"]
        scope, aud = payload["scope"], payload["aud"]
    except KeyError:
        return _parse_claims_checked(payload, by_reference)
    get = payload.get
    iss, task_id, orch_id = get("iss", ""), get("task_id", ""), get("orch_id", "")
    c_hash, principal = get("chain_hash", ""), get("principal", "")
    if (
        "delegation_chain" in payload
        or type(sub) is not str
        or type(client_id) is not str
        or type(jti) is not str
        or not (sub and client_id and jti)
        or type(iss) is not str
        or type(task_id) is not str
        or type(orch_id) is not str
        or type(c_hash) is not str
        or type(principal) is not str
        or type(exp) is not int
        or type(nbf) is not int
        or type(iat) is not int
        or type(scope) is not list
        or type(aud) is not list
    ):
        return _parse_claims_checked(payload, by_reference)
    for item in scope:
        if type(item) is not str:
            return _parse_claims_checked(payload, by_reference)
    for item in aud:
        if type(item) is not str:
            return _parse_claims_checked(payload, by_reference)
    building = _new(_Building)
    building.sub = sub
    building.client_id = client_id
    building.scope = tuple(scope)
    building.aud = tuple(aud)
    building.iss = iss
    building.exp = exp
    building.nbf = nbf
    building.iat = iat
    building.jti = jti
    building.task_id = task_id
    building.orch_id = orch_id
    building.delegation_chain = ()
    building.chain_hash = c_hash
    building.claims = payload
    building.principal = principal
    building.actors = ()
    building.by_reference = by_reference
    building.__class__ = VerifiedToken
    token: VerifiedToken = building
    return token


# parse_claims builds one VerifiedToken per first-seen token. A frozen dataclass's
# __init__ stores each field through object.__setattr__ (~2 us for these 17). Instead,
# parse_claims fills a _Building, a class with exactly VerifiedToken's slots and no
# __setattr__ of its own (so each store is a plain slot store), then gives it the class
# VerifiedToken: Python allows __class__ assignment between two classes of the same
# layout, and refuses it (TypeError) otherwise. The result is frozen like any other
# VerifiedToken. Every slot must be filled: checked here at import, and by tests/verify
# against the dataclass constructor.
_new = object.__new__
_Building: Any = type("_Building", (), {"__slots__": VerifiedToken.__slots__})


def _check_fast_parse() -> None:
    fields = [f.name for f in dataclasses.fields(VerifiedToken)]
    if sorted(fields) != sorted(VerifiedToken.__slots__) or fields != [
        "sub", "client_id", "scope", "aud", "iss", "exp", "nbf", "iat", "jti", "task_id",
        "orch_id", "delegation_chain", "chain_hash", "claims", "principal", "actors",
        "by_reference",
    ]:  # fmt: skip
        raise RuntimeError("VerifiedToken's fields changed: update parse_claims's fast path")
    payload = {
        "sub": "s", "client_id": "c", "scope": ["p"], "aud": ["a"], "iss": "i", "exp": 3,
        "nbf": 1, "iat": 2, "jti": "j", "task_id": "t", "orch_id": "o", "chain_hash": "",
        "principal": "u",
    }  # fmt: skip
    fast = parse_claims(payload, by_reference=True)
    slow = VerifiedToken(
        sub="s", client_id="c", scope=("p",), aud=("a",), iss="i", exp=3, nbf=1, iat=2,
        jti="j", task_id="t", orch_id="o", delegation_chain=(), chain_hash="",
        claims=payload, principal="u", actors=(), by_reference=True,
    )  # fmt: skip
    if type(fast) is not VerifiedToken or fast != slow:
        raise RuntimeError("parse_claims's fast path no longer builds a whole VerifiedToken")


_check_fast_parse()


def _parse_claims_checked(payload: dict[str, Any], by_reference: bool) -> VerifiedToken:
    """:func:`parse_claims` claim by claim (delegated tokens, and every malformed one)."""
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
        principal=_str(payload, "principal", required=False),
        by_reference=by_reference,
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
) -> VerifiedToken:
    """The claim checks of ``core.validation``, in its order. Raises :class:`InvalidToken`.

    Returns the token, with :attr:`VerifiedToken.actors` filled in for a delegated one.
    """
    if not hmac.compare_digest(token.iss.encode(), issuer.encode()):
        raise InvalidToken("issuer mismatch")
    if audience not in token.aud:
        raise InvalidToken("audience mismatch")
    claims = token.claims
    cnf = claims.get("cnf")
    if cnf is not None and not _well_formed_cnf(cnf):
        # An unknown confirmation method is refused, not ignored: ignoring it would turn a
        # token bound in a way we cannot check into a bearer token.
        raise InvalidToken("cnf claim malformed")
    exp, iat = token.exp, token.iat
    # check_time, written out (this is on the first-seen hot path).
    if now > exp + skew:
        raise InvalidToken("token expired")
    if now + skew < token.nbf:
        raise InvalidToken("token not yet valid")
    if now + skew < iat:
        raise InvalidToken("token issued in the future")
    if exp <= iat or exp - iat > max_lifetime:
        raise InvalidToken("token lifetime outside the allowed range")
    chain = token.delegation_chain
    if chain:
        if len(chain) > max_depth:
            raise InvalidToken("delegation chain longer than the depth limit")
        if not hmac.compare_digest(token.chain_hash, chain_hash(chain)):
            raise InvalidToken("delegation chain hash mismatch")
        if token.principal:
            actors = check_act(token, max_depth)
            if actors:
                return dataclasses.replace(token, actors=actors)
            return token
    elif token.chain_hash:
        raise InvalidToken("chain_hash without a delegation chain")
    # check_act for a token that is not delegated, or has no principal: no act.
    if claims.get("act") is not None:
        raise InvalidToken("act claim on a token that is not delegated")
    return token


def _well_formed_cnf(cnf: object) -> bool:
    """``cnf`` is a non-empty object of known, non-empty string members (as the broker)."""
    return (
        isinstance(cnf, dict)
        and bool(cnf)
        and all(k in _CNF_MEMBERS and isinstance(v, str) and v for k, v in cnf.items())
    )


def act_actors(act: object, limit: int) -> list[str] | None:
    """The ``sub`` of every level of an ``act`` claim, outermost first (``core.tokens``).

    None if it is not a chain of ``{"sub": str[, "act": {...}]}`` objects (no other
    members) or is deeper than ``limit``: read iteratively, so no depth can recurse.
    """
    actors: list[str] = []
    level = act
    while level is not None:
        if len(actors) >= limit or not isinstance(level, dict) or set(level) - {"sub", "act"}:
            return None
        sub = level.get("sub")
        if not isinstance(sub, str) or not sub:
            return None
        actors.append(sub)
        level = level.get("act")
    return actors


def check_act(token: VerifiedToken, max_depth: int) -> tuple[str, ...]:
    """The RFC 8693 ``act`` chain must be exactly the one the chain and principal imply.

    As ``core.validation``: a delegated token with a principal carries ``act`` whose
    actors, outermost first, are the holder, the delegators from the last to the root,
    then the principal (depth = delegation depth + 2); any other token carries no ``act``.
    Returns the actors (empty for a token that is not delegated).
    """
    act = token.claims.get("act")
    if not token.delegation_chain or not token.principal:
        if act is not None:
            raise InvalidToken("act claim on a token that is not delegated")
        return ()
    actors = act_actors(act, max_depth + 2)
    if actors is None:
        raise InvalidToken("act claim malformed or deeper than the limit")
    expected = [token.sub, *(hop.agent for hop in reversed(token.delegation_chain))]
    if actors != [*expected, token.principal]:
        raise InvalidToken("act chain disagrees with the delegation chain")
    return tuple(actors)


def claims_from_introspection(body: Mapping[str, Any]) -> VerifiedToken:
    """The token an RFC 7662 response stands for; :class:`InvalidToken` unless active.

    The broker answers an active token with its claims plus ``active: true``,
    ``token_type`` and ``scope`` as a space-separated string (RFC 7662 section 2.2).
    """
    if type(body) is not dict or body.get("active") is not True:
        raise InvalidToken("by-reference token is not active")
    payload = {k: v for k, v in body.items() if k not in ("active", "token_type")}
    scope = payload.get("scope", "")
    if type(scope) is not str:
        raise InvalidToken("introspected scope is not a string")
    payload["scope"] = scope.split()
    return parse_claims(payload, by_reference=True)


def check_time(token: VerifiedToken, now: float, skew: int) -> None:
    """``exp``, ``nbf`` and ``iat`` against ``now`` with ``skew`` seconds of tolerance."""
    if now > token.exp + skew:
        raise InvalidToken("token expired")
    if now + skew < token.nbf:
        raise InvalidToken("token not yet valid")
    if now + skew < token.iat:
        raise InvalidToken("token issued in the future")
