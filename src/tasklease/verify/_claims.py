"""Verified claims of an agent access token, typed.

The claim rules themselves (issuer, audience, time, lifetime, chain, ``act``, lineage) are
:mod:`tasklease.rules.claims`, the broker's own; this module turns a verified payload into
a :class:`VerifiedToken` fast, with the same types and shapes the rules read.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.rules import grants as grant_rules
from tasklease.rules import grantuse as grant_use
from tasklease.rules import scopes as scope_rules
from tasklease.rules.attest import Attestation, AttestClaimError, attestation_of
from tasklease.rules.chainverify import VerifiedChain
from tasklease.rules.claims import (
    MAX_LINEAGE,
    ClaimRejected,
    DelegationRecord,
    delegation_chain_of,
    holder_of,
    int_claim,
    lineage_of,
    scope_claim,
    standing_claims,
    string_claim,
    strings_claim,
)
from tasklease.verify._errors import InvalidToken

__all__ = [
    "DelegationHop",
    "VerifiedToken",
    "claims_from_introspection",
    "parse_claims",
]

DelegationHop = DelegationRecord
"""One delegation hop: ``agent`` (holding ``scope``) delegated at ``delegated_at``."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature, issuer, audience, lifetime, chain and revocation checked out.

    ``claims`` is the payload as sent (for a by-reference token, the introspected claims;
    ``scope`` is a space-delimited string in both, RFC 9068 section 2.2.3.1). ``sub`` is
    the agent holding the token: for a delegated token the current actor of its RFC 8693
    ``act`` claim, while ``claims["sub"]`` is the subject it acts for (the root
    delegator). ``principal`` is the human the work is done for (``kind:value``, empty
    when the token names none); ``actors`` are the ``sub`` of every level of the ``act``
    claim, outermost first: the holder, then the delegators from the last back to the
    second (empty for a token that is not delegated).
    ``by_reference`` is true for an opaque token resolved by introspection. ``scope`` is
    the token's scope list (``action:resource:identifier``); :meth:`has_scope` applies
    tasklease's wildcard rule. ``lineage`` are the ancestors whose end ends this token
    (``app:<app_id>``, grant ids, ``renewal:<grant id>`` and the ``jti`` of delegating
    tokens), oldest first.
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
    delegation_chain: tuple[DelegationRecord, ...]
    chain_hash: str
    claims: Mapping[str, Any]
    principal: str = ""
    actors: tuple[str, ...] = ()
    by_reference: bool = False
    lineage: tuple[str, ...] = ()
    # An offline chain (rules.chainverify) presented instead of a token: the whole chain,
    # verified; the fields above are its last block's. None for a token.
    offline: VerifiedChain | None = None

    @property
    def oiat(self) -> int:
        """When the token's registration was made (its ``oiat`` claim; 0 if it has none):
        revocation of its agent or task matches by it (``core.revocation``)."""
        value = self.claims.get("oiat")
        return value if type(value) is int else 0

    @property
    def cnf(self) -> Mapping[str, str] | None:
        """The token's confirmation claim (RFC 7800) when it is sender-constrained."""
        cnf = self.claims.get("cnf")
        return cnf if isinstance(cnf, dict) else None

    @property
    def depth(self) -> int:
        """How many delegation hops led to this token (0 for an agent's own token)."""
        return len(self.delegation_chain)

    @property
    def attestation(self) -> Attestation | None:
        """What the agent's workload proved at registration (the ``attest`` claim: the
        attestor type, the attested ``facts``, and apart from them the ``declared`` ones),
        kept by every renewal and delegation; None when it registered with a launch token
        alone. Require facts with :func:`tasklease.verify.require_attested`.

        Raises:
            InvalidToken: the claim is malformed.
        """
        try:
            return attestation_of(self.claims)
        except AttestClaimError as exc:
            raise InvalidToken(exc.reason) from None

    @property
    def authorization_details(self) -> tuple[Mapping[str, Any], ...]:
        """The token's structured grants besides ``scope`` (RFC 9396, the
        ``authorization_details`` claim; ``()`` when it has scopes only).

        Raises:
            InvalidToken: the claim is malformed.
        """
        try:
            return grant_rules.details_of(self.claims)
        except grant_rules.GrantError as exc:
            raise InvalidToken(f"authorization_details: {exc.reason}") from None

    def allows(
        self, kind: str, *, now: float | None = None, **call: Any
    ) -> Mapping[str, Any] | None:
        """The token's grant of type ``kind`` that allows this call, or None.

        ``call`` is what the call does: ``scope`` (for a ``scope`` grant), ``action``,
        ``location``, ``datatype``, ``privilege``, ``identifier``, ``amount`` with
        ``currency``, ``values`` (fields that ``allowed_values`` restricts) and
        ``fields`` (an operator's type's members). Every argument given must be allowed;
        a grant with ``max_amount`` needs the ``amount``, one with ``allowed_values`` the
        ``values``, one with a time window a call inside it (``now``, default the
        clock). Plain scopes are ``scope`` grants. ``max_calls`` is the broker's to
        count (:meth:`~tasklease.verify.Verifier.count_call`).

        Raises:
            InvalidToken: the token's ``authorization_details`` claim is malformed.
        """
        grants = grant_rules.grants_of(self.scope, self.authorization_details)
        moment = time.time() if now is None else now
        return grant_use.allows(grants, kind, now=moment, **call)

    def has_scope(self, required: str) -> bool:
        """True when one of the token's scopes covers ``required``.

        ``read:data:*`` covers ``read:data:42``; nothing covers another action or resource.
        """
        return scope_rules.is_subset([required], self.scope)


# An absent lineage claim: a JSON payload never holds a tuple, so ``is`` tells it apart
# from any value a token can carry.
_NO_LINEAGE: tuple[str, ...] = ()


def parse_claims(payload: dict[str, Any], *, by_reference: bool = False) -> VerifiedToken:
    """Type-check a verified payload. Raises :class:`InvalidToken` naming the bad claim.

    This is on the first-seen hot path: one pass of inline type checks for a well-formed
    payload; anything else takes :func:`_parse_claims_checked`, which names the first bad
    claim in a fixed order with the readers of ``tasklease.rules.claims``.
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
    lineage = get("lineage", _NO_LINEAGE)
    if (
        "delegation_chain" in payload
        or "authorization_details" in payload
        or type(get("oiat", 0)) is not int
        or type(get("rnc", 0)) is not int
        or type(get("grant", "")) is not str
        or type(get("max_exp", 0)) is not int
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
        or type(scope) is not str
        or type(aud) is not list
    ):
        return _parse_claims_checked(payload, by_reference)
    # RFC 9068 section 2.2.3.1: space-delimited; an empty token is malformed.
    scopes = tuple(scope.split(" ")) if scope else ()
    if "" in scopes:
        return _parse_claims_checked(payload, by_reference)
    for item in aud:
        if type(item) is not str:
            return _parse_claims_checked(payload, by_reference)
    if lineage is not _NO_LINEAGE:
        # rules.claims.lineage_of, written out (tests/verify holds the two to one answer).
        if type(lineage) is not list or len(lineage) > MAX_LINEAGE:
            return _parse_claims_checked(payload, by_reference)
        for item in lineage:
            if type(item) is not str or not item:
                return _parse_claims_checked(payload, by_reference)
        lineage = tuple(lineage)
    building = _new(_Building)
    building.sub = sub
    building.client_id = client_id
    building.scope = scopes
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
    building.lineage = lineage
    building.offline = None
    building.__class__ = VerifiedToken
    token: VerifiedToken = building
    return token


# parse_claims builds one VerifiedToken per first-seen token. A frozen dataclass's
# __init__ stores each field through object.__setattr__ (~2 us for these 19). Instead,
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
        "by_reference", "lineage", "offline",
    ]:  # fmt: skip
        raise RuntimeError("VerifiedToken's fields changed: update parse_claims's fast path")
    payload = {
        "sub": "s", "client_id": "c", "scope": "p", "aud": ["a"], "iss": "i", "exp": 3,
        "nbf": 1, "iat": 2, "jti": "j", "task_id": "t", "orch_id": "o", "chain_hash": "",
        "principal": "u", "lineage": ["app:x"],
    }  # fmt: skip
    fast = parse_claims(payload, by_reference=True)
    slow = VerifiedToken(
        sub="s", client_id="c", scope=("p",), aud=("a",), iss="i", exp=3, nbf=1, iat=2,
        jti="j", task_id="t", orch_id="o", delegation_chain=(), chain_hash="",
        claims=payload, principal="u", actors=(), by_reference=True, lineage=("app:x",),
    )  # fmt: skip
    if type(fast) is not VerifiedToken or fast != slow:
        raise RuntimeError("parse_claims's fast path no longer builds a whole VerifiedToken")


_check_fast_parse()


def _parse_claims_checked(payload: dict[str, Any], by_reference: bool) -> VerifiedToken:
    """:func:`parse_claims` claim by claim (delegated tokens, tokens with structured
    grants, and every malformed one), with the broker's readers (``core.tokens``): a
    token the broker would refuse for a claim's type is refused here too."""
    try:
        chain = delegation_chain_of(payload.get("delegation_chain", []))
        iat = int_claim(payload, "iat")
        standing_claims(payload, iat)
        if "authorization_details" in payload:
            grant_rules.details_of(payload)
        return VerifiedToken(
            sub=holder_of(payload),
            client_id=string_claim(payload, "client_id", required=True),
            scope=scope_claim(payload),
            aud=strings_claim(payload, "aud"),
            iss=string_claim(payload, "iss", required=False),
            exp=int_claim(payload, "exp"),
            nbf=int_claim(payload, "nbf"),
            iat=iat,
            jti=string_claim(payload, "jti", required=True),
            task_id=string_claim(payload, "task_id", required=False),
            orch_id=string_claim(payload, "orch_id", required=False),
            delegation_chain=chain,
            chain_hash=string_claim(payload, "chain_hash", required=False),
            claims=payload,
            principal=string_claim(payload, "principal", required=False),
            by_reference=by_reference,
            lineage=lineage_of(payload["lineage"]) if "lineage" in payload else (),
        )
    except ClaimRejected as exc:
        raise InvalidToken(exc.reason) from None
    except grant_rules.GrantError as exc:
        raise InvalidToken(f"authorization_details: {exc.reason}") from None


def claims_from_introspection(body: Mapping[str, Any]) -> VerifiedToken:
    """The token an RFC 7662 response stands for; :class:`InvalidToken` unless active.

    The broker answers an active token with its claims plus ``active: true``,
    ``token_type`` and ``scope`` as a space-separated string (RFC 7662 section 2.2).
    """
    if type(body) is not dict or body.get("active") is not True:
        raise InvalidToken("by-reference token is not active")
    payload = {k: v for k, v in body.items() if k not in ("active", "token_type")}
    if type(payload.get("scope", "")) is not str:
        raise InvalidToken("introspected scope is not a string")
    return parse_claims(payload, by_reference=True)
