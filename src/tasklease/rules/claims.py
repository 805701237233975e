"""Claim rules: what a token's claims must satisfy once its signature has verified.

The broker's validation (``tasklease.core.validation``) and the offline verifier
(``tasklease.verify``) apply exactly these rules, in this order: issuer, audience,
``cnf`` shape, time, lifetime, ``max_exp``, delegation depth and chain hash, the ``act``
chain. The functions are pure (time comes in as ``now``) and refuse with
:class:`ClaimRejected`, whose ``reason`` is for the audit log and debug logs only.

Time (RFC 7519 sections 4.1.4 to 4.1.6):

* ``exp``: a token is dead at its ``exp``. It is refused when ``now >= exp``: "the JWT MUST
  NOT be accepted for processing" on or after the expiration time. No clock-skew
  tolerance applies. A verifier whose clock is known to run ahead may allow
  ``exp_leeway`` seconds (0 unless configured); the broker allows none.
* ``nbf`` and ``iat``: a token whose ``nbf`` or ``iat`` is at most ``skew`` seconds in the
  future is accepted, because the clocks of the broker, its replicas and the resource
  servers are never exactly in step; beyond that it is refused.

Lineage (``core.kernel``): ``lineage`` lists the ancestors whose end ends the token
(oldest first, at most :data:`MAX_LINEAGE` non-empty ids); ``max_exp``, when present, is
the latest ``exp`` any token of the lineage may have, and a token past it is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "CNF_MEMBERS",
    "MAX_LINEAGE",
    "ClaimRejected",
    "ClaimSet",
    "DelegationHopLike",
    "DelegationRecord",
    "act_actors",
    "act_claim",
    "chain_hash",
    "chain_hash_matches",
    "check_act",
    "check_claims",
    "check_time",
    "delegation_chain_of",
    "finite_number",
    "holder_of",
    "int_claim",
    "is_expired",
    "lineage_of",
    "scope_claim",
    "standing_claims",
    "string_claim",
    "strings_claim",
    "well_formed_cnf",
]

MAX_LINEAGE = 64
"""Most ancestors a token may list: an app, and a grant and a token per delegation hop,
with room to spare."""

CNF_MEMBERS = frozenset(("x5t#S256", "jkt"))
"""The confirmation methods tasklease can check (RFC 8705, RFC 9449)."""


class ClaimRejected(Exception):
    """A claim failed its rule.

    ``reason`` says precisely why, for the audit log and debug logs only; ``category`` is
    the broker's metric label (``issuer``, ``audience``, ``expired``, ``not_yet_valid``,
    ``claims``, ``delegation``).
    """

    def __init__(self, reason: str, category: str = "claims") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class DelegationHopLike(Protocol):
    """One delegation record as each side types it."""

    @property
    def agent(self) -> str: ...
    @property
    def scope(self) -> Sequence[str]: ...
    @property
    def delegated_at(self) -> str: ...
    @property
    def signature(self) -> str: ...


class ClaimSet(Protocol):
    """What the rules read of a typed token: the broker's ``Claims`` and the verifier's
    ``VerifiedToken`` both qualify."""

    @property
    def iss(self) -> str: ...
    @property
    def sub(self) -> str: ...
    @property
    def aud(self) -> Sequence[str]: ...
    @property
    def exp(self) -> int: ...
    @property
    def nbf(self) -> int: ...
    @property
    def iat(self) -> int: ...
    @property
    def delegation_chain(self) -> Sequence[DelegationHopLike]: ...
    @property
    def chain_hash(self) -> str: ...
    @property
    def principal(self) -> str: ...


@dataclass(frozen=True, slots=True)
class DelegationRecord:
    """One hop: ``agent`` delegated (holding ``scope``) at ``delegated_at``.

    ``signature`` is the broker's Ed25519 signature (hex) over the record's signing input
    (``tasklease.core.delegation``).
    """

    agent: str
    scope: tuple[str, ...]
    delegated_at: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        """The record as the ``delegation_chain`` claim carries it."""
        return {
            "agent": self.agent,
            "scope": list(self.scope),
            "delegated_at": self.delegated_at,
            "signature": self.signature,
        }


# -- reading claims (types and shapes) ------------------------------------------------


def string_claim(payload: Mapping[str, Any], key: str, *, required: bool) -> str:
    """The string claim ``key`` (``""`` when absent and not ``required``)."""
    value = payload.get(key, "")
    if type(value) is not str or (required and not value):
        raise ClaimRejected(f"claim {key} missing or not a string")
    return value


def finite_number(value: object) -> float | None:
    """``value`` as a float when it is a JSON number (an int or a float, never a bool)
    that a float holds and that is finite; else None. JSON integers are read exactly, so
    one may be past every float (``float(10**400)`` raises ``OverflowError``)."""
    if type(value) is not int and type(value) is not float:
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def int_claim(payload: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """The integer claim ``key`` (``default`` when absent; ``None``: required)."""
    value = payload.get(key, default)
    if type(value) is not int:  # bool is not int here
        raise ClaimRejected(f"claim {key} missing or not an integer")
    return value


def strings_claim(payload: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """The required list-of-strings claim ``key``."""
    value = payload.get(key)
    if type(value) is not list:
        raise ClaimRejected(f"claim {key} missing or not a list of strings")
    for item in value:
        if type(item) is not str:
            raise ClaimRejected(f"claim {key} missing or not a list of strings")
    return tuple(value)


def scope_claim(payload: Mapping[str, Any], key: str = "scope") -> tuple[str, ...]:
    """The required scope claim ``key``: a space-delimited string (RFC 9068 section
    2.2.3.1, RFC 8693 section 4.2; one space between scope tokens, none around).

    A list of strings is read too: tokens minted before the string form, live for at
    most ``max_ttl`` after an upgrade.
    """
    value = payload.get(key)
    if type(value) is str:
        if not value:
            return ()
        scopes = value.split(" ")
        if "" in scopes:
            raise ClaimRejected(f"claim {key} is not space-delimited scope tokens")
        return tuple(scopes)
    if type(value) is list:
        return strings_claim(payload, key)
    raise ClaimRejected(f"claim {key} missing or not a string")


def standing_claims(payload: Mapping[str, Any], iat: int) -> tuple[int, int, str, int]:
    """Where a token stands in its lineage, as ``(oiat, rnc, grant, max_exp)``: when its
    registration was made (``oiat``, ``iat`` when absent), how many renewals led to it
    (``rnc``, 0), the grant it was issued under (``grant``, ``""``) and the latest ``exp``
    its lineage may have (``max_exp``, 0). Optional, but of the right type when present:
    the broker and every verifier refuse the same tokens."""
    return (
        int_claim(payload, "oiat", iat),
        int_claim(payload, "rnc", 0),
        string_claim(payload, "grant", required=False),
        int_claim(payload, "max_exp", 0),
    )


def delegation_chain_of(value: object) -> tuple[DelegationRecord, ...]:
    """The ``delegation_chain`` claim's records, oldest first (``[]`` when undelegated)."""
    if type(value) is not list:
        raise ClaimRejected("claim delegation_chain is not a list")
    hops = []
    for item in value:
        if type(item) is not dict:
            raise ClaimRejected("delegation record is not an object")
        hops.append(
            DelegationRecord(
                agent=string_claim(item, "agent", required=True),
                scope=strings_claim(item, "scope"),
                delegated_at=string_claim(item, "delegated_at", required=True),
                signature=string_claim(item, "signature", required=True),
            )
        )
    return tuple(hops)


def lineage_of(value: object) -> tuple[str, ...]:
    """The ``lineage`` claim's ancestor ids: a list of at most :data:`MAX_LINEAGE`
    non-empty strings. (An absent claim is an empty lineage; that is the caller's.)"""
    if type(value) is list and len(value) <= MAX_LINEAGE:
        for item in value:
            if type(item) is not str or not item:
                break
        else:
            return tuple(value)
    raise ClaimRejected("claim lineage malformed or longer than the limit")


def well_formed_cnf(cnf: object) -> bool:
    """``cnf`` is a non-empty object of known, non-empty string members (RFC 7800).

    An unknown confirmation method must be refused, not ignored: ignoring it would turn a
    token bound in a way we cannot check into a bearer token.
    """
    return (
        isinstance(cnf, dict)
        and bool(cnf)
        and all(k in CNF_MEMBERS and isinstance(v, str) and v for k, v in cnf.items())
    )


# -- delegation ---------------------------------------------------------------------------


# What Go's encoding/json writes escaped that Python's json writes as itself (AgentWrit's
# wire contract: the chain is hashed as Go serialises it).
_GO_ESCAPES = str.maketrans(
    {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _chain_json(chain: Sequence[DelegationHopLike]) -> str:
    records = [
        {
            "agent": hop.agent,
            "scope": list(hop.scope),
            "delegated_at": hop.delegated_at,
            "signature": hop.signature,
        }
        for hop in chain
    ]
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False)


def chain_hash(chain: Sequence[DelegationHopLike]) -> str:
    """SHA-256 (hex) of the compact JSON array of the chain's records, keys in wire order,
    as Go serialises it (AgentWrit's rule): non-ASCII as UTF-8, and ``&``, ``<``, ``>``,
    U+2028 and U+2029 escaped as ``\\u`` sequences."""
    encoded = _chain_json(chain).translate(_GO_ESCAPES).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def chain_hash_matches(given: str, chain: Sequence[DelegationHopLike]) -> bool:
    """Whether ``given`` is the chain's hash (:func:`chain_hash`), compared in constant
    time. A chain whose scopes hold one of the characters Go escapes was hashed before
    with them written as themselves; that hash names the same chain as well, and tokens
    minted so are accepted until their lineage ends."""
    text = _chain_json(chain)
    go = text.translate(_GO_ESCAPES)
    wanted = given.encode()
    hashes = {hashlib.sha256(go.encode("utf-8")).hexdigest()}
    if go != text:
        hashes.add(hashlib.sha256(text.encode("utf-8")).hexdigest())
    found = False
    for candidate in hashes:
        found |= hmac.compare_digest(wanted, candidate.encode())
    return found


def act_actors(act: object, limit: int) -> list[str] | None:
    """The ``sub`` of every level of an ``act`` claim (RFC 8693 section 4.1), outermost first.

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


def holder_of(payload: Mapping[str, Any]) -> str:
    """The agent holding a token: the current actor (``act.sub``) of a token that names
    one, else its ``sub``.

    A delegated token is RFC 8693's: ``sub`` is the subject on whose behalf it acts (the
    delegation's root agent) and ``act.sub`` the actor using it now, its holder. That the
    ``act`` chain agrees with the delegation chain is :func:`check_act`'s.
    """
    act = payload.get("act")
    if act is None:
        return string_claim(payload, "sub", required=True)
    sub = act.get("sub") if type(act) is dict else None
    if type(sub) is not str or not sub:
        raise ClaimRejected("act claim malformed or deeper than the limit", "delegation")
    return sub


def act_claim(holder: str, chain: Sequence[DelegationHopLike]) -> dict[str, Any]:
    """The RFC 8693 ``act`` claim of a token ``holder`` received through ``chain``.

    Section 4.1: the outermost ``act`` is the current actor (the holder), each nested one
    an earlier actor: the delegators from the last back to the second; the first
    delegator is the token's ``sub``, the subject on whose behalf they all act. The human
    principal is no actor: it is the ``principal`` claim. Depth is ``len(chain)``.
    """
    act: dict[str, Any] = {"sub": chain[1].agent} if len(chain) > 1 else {}
    for hop in chain[2:]:  # inside out: the second delegator innermost
        act = {"sub": hop.agent, "act": act}
    return {"sub": holder, "act": act} if act else {"sub": holder}


def check_act(token: ClaimSet, payload: Mapping[str, Any], max_depth: int) -> tuple[str, ...]:
    """A delegated token's ``act`` and ``sub`` must be exactly what its chain implies.

    ``sub`` is the root delegator (the first record's agent) and ``act`` the holder
    (``token.sub``) outermost, then the delegators from the last back to the second: its
    depth is the delegation depth, and it can never disagree with ``delegation_chain``.
    A token that is not delegated carries no ``act`` (``null`` counts as absent). Returns
    the actors, outermost first (empty for a token that is not delegated).

    Tokens minted before this shape (live for at most ``max_ttl`` after an upgrade) are
    read too, exactly: ``sub`` the holder, ``act`` the holder, the delegators from the
    last to the root and the principal innermost; or, naming no principal, no ``act``.
    """
    act = payload.get("act")
    chain = token.delegation_chain
    if not chain:
        if act is not None:
            raise ClaimRejected("act claim on a token that is not delegated", "delegation")
        return ()
    subject = payload.get("sub")
    if act is None:
        if token.principal or subject != token.sub:
            raise ClaimRejected("delegated token without an act claim", "delegation")
        return ()  # the earlier shape, without a principal
    actors = act_actors(act, max_depth + 2)
    if actors is None:
        raise ClaimRejected("act claim malformed or deeper than the limit", "delegation")
    earlier = [hop.agent for hop in reversed(chain)]
    if token.sub in earlier:  # no agent delegates to itself or back into its chain
        raise ClaimRejected("act chain disagrees with the delegation chain", "delegation")
    if subject == chain[0].agent and actors == [token.sub, *earlier[:-1]]:
        return tuple(actors)
    if (
        subject == token.sub
        and token.principal
        and actors == [token.sub, *earlier, token.principal]
    ):
        return tuple(actors)  # the earlier shape
    raise ClaimRejected("act chain disagrees with the delegation chain", "delegation")


# -- time ---------------------------------------------------------------------------------


def is_expired(exp: int, now: float, leeway: float = 0) -> bool:
    """A token, proof or receipt is dead from the instant of its ``exp`` (plus ``leeway``,
    which only a verifier configured for bad clocks sets; the broker never)."""
    return now - leeway >= exp  # never exp + leeway: no float holds every JSON integer


def check_time(token: ClaimSet, now: float, skew: float, exp_leeway: float = 0) -> None:
    """``exp`` without tolerance (``exp_leeway``, 0 by default), ``nbf`` and ``iat`` with
    ``skew`` seconds of it (RFC 7519 sections 4.1.4 to 4.1.6).

    Expired means ``now >= exp + exp_leeway``: a token is dead from the instant of its
    ``exp`` ("on or after"). Not yet valid means ``nbf`` or ``iat`` later than
    ``now + skew``.
    """
    if is_expired(token.exp, now, exp_leeway):
        raise ClaimRejected("token expired", "expired")
    if now + skew < token.nbf:
        raise ClaimRejected("token not yet valid", "not_yet_valid")
    if now + skew < token.iat:
        raise ClaimRejected("token issued in the future", "not_yet_valid")


# -- all of them ------------------------------------------------------------------------


def check_claims(
    token: ClaimSet,
    payload: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Collection[str] | None,
    now: float,
    skew: float,
    max_lifetime: int,
    max_depth: int,
    exp_leeway: float = 0,
) -> tuple[str, ...]:
    """Every claim rule, in order, for a typed token and its payload as sent.

    ``audiences``: the token's ``aud`` must name at least one of them (RFC 8707: a token
    minted for one resource fails every other's check); ``None`` accepts any non-empty
    ``aud``. Time as :func:`check_time`; the lifetime ``exp - iat`` must be positive and at
    most ``max_lifetime``; ``exp`` at most ``max_exp`` when the token carries one; the
    delegation chain at most ``max_depth`` hops with a matching ``chain_hash``; ``act`` as
    :func:`check_act`. Returns the ``act`` actors (empty for an undelegated token).

    Raises:
        ClaimRejected: at the first rule that fails.
    """
    # This is on the verifier's first-seen hot path: the checks are written out, and
    # check_time's three are repeated here (tests/rules holds the two to the same answers).
    if not hmac.compare_digest(token.iss.encode(), issuer.encode()):
        raise ClaimRejected("issuer mismatch", "issuer")
    aud = token.aud
    if audiences is not None:
        for accepted in audiences:
            if accepted in aud:
                break
        else:
            raise ClaimRejected("audience mismatch", "audience")
    if not aud:
        raise ClaimRejected("empty audience", "audience")
    cnf = payload.get("cnf")
    if cnf is not None and not well_formed_cnf(cnf):
        raise ClaimRejected("cnf claim malformed")
    exp, iat = token.exp, token.iat
    if now - exp_leeway >= exp:  # is_expired: never exp + leeway (an int past floats)
        raise ClaimRejected("token expired", "expired")
    if now + skew < token.nbf:
        raise ClaimRejected("token not yet valid", "not_yet_valid")
    if now + skew < iat:
        raise ClaimRejected("token issued in the future", "not_yet_valid")
    if exp <= iat or exp - iat > max_lifetime:
        raise ClaimRejected("token lifetime outside the allowed range")
    if "max_exp" in payload:
        max_exp = payload["max_exp"]
        if type(max_exp) is not int or exp > max_exp:
            raise ClaimRejected("token outlives its lineage (exp after max_exp)")
    chain = token.delegation_chain
    if chain:
        if len(chain) > max_depth:
            raise ClaimRejected("delegation chain longer than the depth limit", "delegation")
        if not chain_hash_matches(token.chain_hash, chain):
            raise ClaimRejected("delegation chain hash mismatch", "delegation")
        return check_act(token, payload, max_depth)
    if token.chain_hash:
        raise ClaimRejected("chain_hash without a delegation chain", "delegation")
    # check_act for a token that is not delegated: no act.
    if payload.get("act") is not None:
        raise ClaimRejected("act claim on a token that is not delegated", "delegation")
    return ()
