"""The one issuance check: pure, shared by the broker's kernel, the SDK and the verifier.

Register, renew, resume, delegate, token exchange (``narrow`` in the domain, ``exchange``
from a federated one) and offline attenuation (``attenuate``: a holder hands part of its
authority to a delegate by appending a signed block, ``rules.attenuation``) all create
children through :func:`check_issuance`. It refuses when an ancestor is gone, and otherwise
computes the new credential's ``exp``, renewal count, lineage and principal so that nothing
grows along a lineage (the invariants of docs/authority.md):

1. every ancestor is alive and allows the operation;
2. ``exp`` ≤ every ancestor's ceiling (launch ``max_ttl``, registration lifetime ceiling,
   the parent token's ``exp`` and ``max_exp``);
3. the renewal budget is counted on the lineage and never reset;
4. scope, grants (``rules.grants``) and audience only narrow;
5. the delegate is not already in the chain; offline (``attenuate``), its name is nested
   under its delegator's (``rules.attenuation.is_nested_name``);
6. the human principal and the attestation reach every descendant.

A refusal is a :class:`Refusal` naming a :class:`Reason` (the broker's error code, the
words callers see, a hint) and a detail for the audit log; the broker's kernel
(``core.kernel``) turns the reason into its error and audits it with a ``denial_id``.
Limits come as :class:`IssuanceLimits` (or anything with the same attributes, such as the
broker's configuration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tasklease.rules import grants as grant_rules
from tasklease.rules import scopes as scope_rules
from tasklease.rules.attenuation import is_nested_name
from tasklease.rules.claims import MAX_LINEAGE
from tasklease.rules.grants import TypeRule

__all__ = [
    "FROM_TOKEN",
    "NEW_HOLDER",
    "OPERATIONS",
    "Issuance",
    "IssuanceLimits",
    "Limits",
    "Parent",
    "Reason",
    "Refusal",
    "TargetRefused",
    "TokenClaims",
    "check_issuance",
    "choose_audience",
    "default_audience",
    "joint_parent",
    "narrow_audience",
    "renewal_ancestor",
    "within_ceiling",
]


# --- limits and reasons ----------------------------------------------------------------


class Limits(Protocol):
    """The bounds the check reads: :class:`IssuanceLimits`, or the broker's ``Config``."""

    @property
    def max_ttl(self) -> int: ...
    @property
    def max_renewals(self) -> int: ...
    @property
    def max_delegation_depth(self) -> int: ...
    @property
    def audience(self) -> tuple[str, ...]: ...
    @property
    def renewal_ceiling(self) -> int: ...


@dataclass(frozen=True, slots=True)
class IssuanceLimits:
    """The broker's bounds on issuance: the longest token lifetime, the renewal budget,
    the deepest delegation chain, the broker's own audiences (a token for them only is
    "not yet restricted"; ``()`` where they are unknown, as at a resource server: an
    audience then only narrows to one it already names) and the registration lifetime."""

    max_ttl: int = 3600
    max_renewals: int = 10
    max_delegation_depth: int = 5
    audience: tuple[str, ...] = ()
    renewal_ceiling: int = 3600

    @classmethod
    def of(cls, config: Limits) -> IssuanceLimits:
        """The limits of a broker's configuration (or any :class:`Limits`)."""
        return cls(
            max_ttl=config.max_ttl,
            max_renewals=config.max_renewals,
            max_delegation_depth=config.max_delegation_depth,
            audience=tuple(config.audience),
            renewal_ceiling=config.renewal_ceiling,
        )


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an issuance is refused, as callers read it: the broker's error ``code``
    (``forbidden``, ``scope_violation``, ``invalid_target``, ``renewal_count_exceeded``,
    ``renewal_ceiling_exceeded``), the ``message`` (the problem's detail) and a ``hint``."""

    code: str
    message: str
    hint: str | None = None


class Refusal(Exception):
    """The issuance check refused: ``reason`` for the caller, ``detail`` for the audit log,
    ``event_type`` the audit event's type (``denied``, ``attenuation``, ``audience``,
    ``renewal``, ``depth``, ``policy``)."""

    def __init__(self, reason: Reason, detail: str, event_type: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.event_type = event_type


class TargetRefused(ValueError):
    """An audience choice that is not allowed (RFC 8707 ``invalid_target``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- audiences (RFC 8707) ----------------------------------------------------------------


def default_audience(configured: Sequence[str]) -> tuple[str, ...]:
    """The ``aud`` of a token that names no resource: the first configured audience.

    One, not all: a token valid at every configured resource would be a token for
    none in particular (threat TM-39)."""
    return (configured[0],)


def choose_audience(
    requested: str | None, allowed: Sequence[str], default: tuple[str, ...]
) -> tuple[str, ...]:
    """The ``aud`` of a registration's first token.

    Without a resource ceiling on the launch token, a named resource is taken as is and
    no resource means the broker's default audience (its first, :func:`default_audience`).
    With one, the resource must be in it; a registration that names none gets the only
    allowed resource, and must choose when there are several (a token names a single
    resource). Under a ceiling the default audience is never handed out, even if the
    ceiling lists it: a token for it is one that :func:`narrow_audience` lets narrow to
    any resource, which would lift the ceiling.

    Raises:
        TargetRefused: the resource is outside the launch token's, ambiguous, or the
            default audience under a ceiling.
    """
    if not allowed:
        return (requested,) if requested is not None else default_audience(default)
    if requested is None:
        if len(allowed) != 1:
            raise TargetRefused("the launch token names several resources: choose one (resource)")
        requested = allowed[0]
    elif requested not in allowed:
        raise TargetRefused("resource is not among the launch token's resources")
    if (requested,) == default_audience(default):
        raise TargetRefused(
            "the broker's default audience restricts nothing: under the launch token's "
            "resources, name one of them that is a resource server"
        )
    return (requested,)


def narrow_audience(
    requested: str | None, current: tuple[str, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    """The ``aud`` of a delegated token: the delegator's, or a narrower one.

    A token is "not yet restricted" (it may be narrowed to any one resource) only when it
    names the broker's default audience (``default``'s first: what a token that named no
    resource gets, :func:`default_audience`) or every one of the broker's audiences
    (tokens minted before the default became one audience). A token for any other of the
    broker's audiences was restricted to it, by its launch token's resources or by the
    resource it asked for, and keeps it.

    Raises:
        TargetRefused: the requested resource would widen the audience.
    """
    if requested is None or current == (requested,):
        return current
    unrestricted = bool(default) and (
        current == default_audience(default) or set(current) == set(default)
    )
    if unrestricted or requested in current:
        return (requested,)
    raise TargetRefused("a delegated token's audience can only narrow the delegator's")


# --- parents -----------------------------------------------------------------------------


class _Hop(Protocol):
    @property
    def agent(self) -> str: ...


class TokenClaims(Protocol):
    """What a token as a parent is read of: the broker's ``Claims`` qualifies."""

    @property
    def sub(self) -> str: ...
    @property
    def scope(self) -> tuple[str, ...]: ...
    @property
    def aud(self) -> tuple[str, ...]: ...
    @property
    def principal(self) -> str: ...
    @property
    def lineage(self) -> tuple[str, ...]: ...
    @property
    def oiat(self) -> int: ...
    @property
    def max_exp(self) -> int: ...
    @property
    def exp(self) -> int: ...
    @property
    def iat(self) -> int: ...
    @property
    def rnc(self) -> int: ...
    @property
    def delegation_chain(self) -> Sequence[_Hop]: ...
    @property
    def grant_id(self) -> str: ...
    @property
    def jti(self) -> str: ...
    @property
    def raw(self) -> dict[str, Any]: ...
    @property
    def details(self) -> tuple[Mapping[str, Any], ...]: ...


@dataclass(frozen=True, slots=True)
class Parent:
    """What a new token descends from, as far as the issuance check needs it.

    For a registration or a resumption, the launch token or registration (``grant`` is
    "": a new grant starts); for a renewal, a delegation or an attenuation, the parent
    token's (or block's) claims. ``ceiling`` is the latest ``exp`` the lineage allows
    (``max_exp``), ``token_exp`` the parent token's own ``exp`` (0 when the parent is not
    a token), ``ttl`` the longest lifetime one token of the lineage may have (launch
    ``max_ttl``). ``resumable`` is false when the registration's launch token switched
    resumption off (``allow_resume``). ``attest`` is the attestation the lineage carries
    (the ``attest`` claim), handed on unchanged to every descendant.
    """

    holder: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    principal: str
    lineage: tuple[str, ...]
    ceiling: int
    ttl: int
    renewals: int
    chain_agents: tuple[str, ...] = ()
    grant: str = ""
    jti: str = ""
    token_exp: int = 0
    resumable: bool = True
    attest: Mapping[str, Any] | None = None
    details: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of_token(cls, claims: TokenClaims, limits: Limits) -> Parent:
        """A token as a parent: its ceiling is its recorded ``max_exp`` and, for tokens
        minted before lineage was recorded, the registration lifetime ceiling."""
        ceiling = claims.oiat + limits.renewal_ceiling
        if claims.max_exp:
            ceiling = min(ceiling, claims.max_exp)
        attest = claims.raw.get("attest")
        return cls(
            holder=claims.sub,
            scope=claims.scope,
            audience=claims.aud,
            principal=claims.principal,
            lineage=claims.lineage,
            ceiling=ceiling,
            ttl=min(limits.max_ttl, max(1, claims.exp - claims.iat)),
            renewals=claims.rnc,
            chain_agents=(*(r.agent for r in claims.delegation_chain), claims.sub),
            grant=claims.grant_id,
            jti=claims.jti,
            token_exp=claims.exp,
            attest=attest if isinstance(attest, dict) else None,
            details=claims.details,
        )


def joint_parent(
    first: Parent, second: Parent, rules: Mapping[str, TypeRule] | None = None
) -> Parent:
    """The parent of a registration that descends from two ancestors at once (a launch
    token and an attestation, or either and its app's current ceiling): every bound the
    narrower of the two, the lineage both.

    Scope is the scopes both cover (``rules.scopes.intersect``), grants those both cover
    (``rules.grants.common`` under ``rules``; an operator's type without a rule only when
    identical); resources (audience) the ones both allow, where an empty tuple allows any;
    the lifetimes the smaller; the principal the first's; the attestation the second's,
    else the first's.

    Raises:
        Refusal: both name resources and none is common (no token could be for any).
    """
    if first.audience and second.audience:
        audience = tuple(a for a in first.audience if a in second.audience)
        if not audience:
            raise Refusal(
                Reason(
                    "invalid_target",
                    "no resource is allowed by both the launch token and the policy",
                ),
                f"audience would widen | launch=[{' '.join(first.audience)}] | "
                f"attested=[{' '.join(second.audience)}]",
                "audience",
            )
    else:
        audience = first.audience or second.audience
    shared = grant_rules.common(
        grant_rules.grants_of(first.scope, first.details),
        grant_rules.grants_of(second.scope, second.details),
        rules,
    )
    return Parent(
        holder=first.holder,
        scope=scope_rules.intersect(first.scope, second.scope),
        details=grant_rules.plain_scopes(shared)[1],
        audience=audience,
        principal=first.principal or second.principal,
        lineage=(*first.lineage, *(a for a in second.lineage if a not in first.lineage)),
        ceiling=min(first.ceiling, second.ceiling),
        ttl=min(first.ttl, second.ttl),
        renewals=max(first.renewals, second.renewals),
        resumable=first.resumable and second.resumable,
        attest=second.attest or first.attest,
    )


@dataclass(frozen=True, slots=True)
class Issuance:
    """What the issuance check grants: the new token's lineage fields and lifetime."""

    exp: int
    renewals: int
    lineage: tuple[str, ...]
    grant: str
    max_exp: int
    principal: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    attest: Mapping[str, Any] | None = None
    details: tuple[Mapping[str, Any], ...] = ()
    # The policy decision, as audit text (``core.policy.Decision.audit``); "" when none
    # was asked (renewal, resumption and attenuation change nothing policy decides).
    decision: str = ""

    def ttl(self, iat: int) -> int:
        return self.exp - iat


# --- the check ---------------------------------------------------------------------------

OPERATIONS = ("register", "renew", "resume", "delegate", "exchange", "narrow", "attenuate")
# The wire's words for a widening, as clients have always read them.
_WIDENING = {
    "register": "requested scope exceeds allowed scope",
    "renew": "renewal cannot change scope",
    "resume": "resumption cannot change scope",
    "delegate": "delegated scope exceeds delegator scope",
    "exchange": "requested scope exceeds what the subject token grants here",
    "narrow": "requested scope exceeds the subject token's scope",
    "attenuate": "attenuated scope exceeds the holder's scope",
}
# What widening grants reads as: the scope's words, for grants.
_GRANTS_WIDENING = "grants would widen"


def renewal_ancestor(grant: str) -> str:
    """The lineage id every renewal of ``grant`` (its first token's ``jti``) lists, and
    ending any of its tokens ends: a successor renewed in a race with that end dies too."""
    return f"renewal:{grant}"


FROM_TOKEN = ("delegate", "exchange", "narrow", "attenuate")
"""Operations whose parent is a token that hands on part of itself: the child lives within
the parent token's exp and lists the parent's grant and jti in its lineage."""
NEW_HOLDER = ("delegate", "exchange", "attenuate")
"""Operations that add a hop to the chain: depth bounded, no agent twice."""


def check_issuance(
    operation: str,
    parent: Parent,
    *,
    holder: str,
    scope: tuple[str, ...],
    iat: int,
    requested_ttl: int,
    limits: Limits,
    dead_ancestor: str = "",
    resource: str | None = None,
    details: tuple[Mapping[str, Any], ...] = (),
    rules: Mapping[str, TypeRule] | None = None,
    holder_lineage: tuple[str, ...] = (),
) -> Issuance:
    """The one issuance check every credential path calls. Raises :class:`Refusal`.

    ``operation`` is one of ``register``, ``renew``, ``resume``, ``delegate``,
    ``exchange`` (RFC 8693: a federated domain's token, as ``parent``, handed to a local
    agent: a delegation whose parent named this broker as its audience, so the child's
    audience is chosen among ours), ``narrow`` (RFC 8693 within the domain: the holder
    derives a narrower token from its own, same holder, no new hop) or ``attenuate`` (a
    delegation made offline by the holder: a new hop whose audience only narrows);
    ``holder`` the new token's subject; ``scope`` what it asks for; ``requested_ttl``
    the lifetime asked for; ``dead_ancestor``, when not empty, says why an ancestor the
    caller looked up in the store (app, registration, delegate) is no longer alive;
    ``resource`` (RFC 8707) the one resource a registration or delegation asks its token
    to be for: among the parent's, never wider; ``details`` the structured grants it asks
    for (``rules.grants``), each covered by one of the parent's scopes or grants under
    its type's rule (``rules``: operators' types; one without a rule narrows only to an
    identical grant). Renewal and resumption change neither. ``holder_lineage`` is what
    the new holder of a delegation or exchange descends from (its app, ``app:<app_id>``,
    and the attestation it registered through, ``attest:...``): the token lists it too,
    so that the holder's end (its app removed, its attestation revoked) ends what was
    handed to it, not only what it holds of its own.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown issuance operation: {operation}")
    if operation == "narrow" and holder != parent.holder:
        raise ValueError("narrowing keeps the holder: a new holder is a delegation")
    if dead_ancestor:
        raise Refusal(
            Reason("forbidden", "an ancestor credential has ended"), dead_ancestor, "denied"
        )
    if operation == "resume" and not parent.resumable:
        raise Refusal(
            Reason(
                "forbidden",
                "resume is switched off for this agent",
                "its launch token was created with allow_resume: false; register anew",
            ),
            "its launch token switched resumption off (allow_resume false)",
            "denied",
        )
    if not scope_rules.is_subset(scope, parent.scope):
        raise Refusal(
            Reason("scope_violation", _WIDENING[operation]),
            f"scope would widen | requested=[{' '.join(scope)}] | "
            f"allowed=[{' '.join(parent.scope)}]",
            "attenuation",
        )
    wider = _wider_grants(operation, parent, details, rules)
    if wider:
        raise Refusal(
            Reason("scope_violation", _WIDENING[operation]),
            f"{_GRANTS_WIDENING} | requested={wider[:900]} | allowed="
            f"{grant_rules.canonical({'d': list(parent.details)})[5:-1][:600]}",
            "attenuation",
        )
    default = tuple(limits.audience)
    try:
        if operation == "register":
            audience = choose_audience(resource, parent.audience, default)
        elif operation in ("delegate", "narrow"):
            audience = narrow_audience(resource, parent.audience, default)
        elif operation == "attenuate":
            # Offline, the broker's own audiences may be unknown (limits without them):
            # then an audience only narrows to one the parent already names.
            audience = narrow_audience(resource, parent.audience, default)
        elif operation == "exchange":
            # The foreign parent was for this broker as a whole: any one of our resources,
            # or our default audience, is within it.
            audience = choose_audience(resource, (), default)
        else:
            audience = parent.audience
    except TargetRefused as exc:
        raise Refusal(
            Reason("invalid_target", exc.message),
            f"audience would widen | requested={resource} | allowed=[{' '.join(parent.audience)}]",
            "audience",
        ) from None
    max_renewals = limits.max_renewals
    renewals = parent.renewals + (1 if operation in ("renew", "resume") else 0)
    if renewals > max_renewals:
        raise Refusal(
            Reason(
                "renewal_count_exceeded",
                f"token has been renewed {parent.renewals} times, the maximum",
                "register a new agent instance with a fresh launch token",
            ),
            f"renewal count limit reached ({parent.renewals}/{max_renewals})",
            "renewal",
        )
    depth = len(parent.chain_agents) - 1
    if operation in NEW_HOLDER and depth >= limits.max_delegation_depth:
        raise Refusal(
            Reason("scope_violation", "delegation depth limit exceeded"),
            f"delegation depth {depth} at limit {limits.max_delegation_depth}",
            "depth",
        )
    if operation == "attenuate" and not is_nested_name(parent.holder, holder):
        # Offline, nobody can tell whose a name is, only whose key signed the block: a
        # delegate is named under its delegator, so no holder can name another agent.
        raise Refusal(
            Reason(
                "scope_violation",
                "an offline delegate's name must be nested under its delegator's",
                "name the delegate <delegator's id>/<label>",
            ),
            f"delegate name not nested under its delegator's | delegate={holder[:512]} | "
            f"delegator={parent.holder[:512]}",
            "attenuation",
        )
    if operation in NEW_HOLDER and holder in parent.chain_agents:
        raise Refusal(
            Reason("scope_violation", "the delegate already holds this authority in the chain"),
            f"delegation cycle: {holder} is already in the chain",
            "attenuation",
        )
    ceiling = parent.ceiling
    if parent.token_exp and operation in FROM_TOKEN:
        ceiling = min(ceiling, parent.token_exp)
    exp = min(iat + min(requested_ttl, parent.ttl, limits.max_ttl), ceiling)
    if exp <= iat:
        raise Refusal(
            Reason(
                "renewal_ceiling_exceeded",
                "token has reached its maximum lifetime since registration",
                "register a new agent instance with a fresh launch token",
            ),
            f"lineage ceiling reached (max_exp={ceiling})",
            "renewal",
        )
    if operation in FROM_TOKEN:
        # The new token descends from the parent's grant and token: ending either ends
        # it (core.kernel.ending_records).
        lineage = (*parent.lineage, parent.grant)
        if parent.jti and parent.jti != parent.grant:
            lineage = (*lineage, parent.jti)
        if operation in NEW_HOLDER:
            lineage = (*lineage, *(a for a in holder_lineage if a and a not in lineage))
        grant = ""
    elif operation == "renew":
        # Ending any token of the grant ends its renewal id (core.kernel.ending_records).
        renewed = renewal_ancestor(parent.grant)
        lineage = parent.lineage if renewed in parent.lineage else (*parent.lineage, renewed)
        grant = parent.grant
    else:
        lineage, grant = parent.lineage, ""
    if len(lineage) > MAX_LINEAGE:
        raise Refusal(
            Reason("scope_violation", "the chain of ancestors is too long to continue"),
            f"lineage of {len(lineage)} ancestors exceeds {MAX_LINEAGE}",
            "depth",
        )
    return Issuance(
        exp=exp,
        renewals=renewals,
        lineage=lineage,
        grant=grant,
        max_exp=ceiling,
        principal=parent.principal,
        scope=scope,
        audience=audience,
        attest=parent.attest,
        details=details,
    )


def within_ceiling(
    scope: Sequence[str],
    details: Sequence[Mapping[str, Any]],
    ceiling_scope: Sequence[str],
    ceiling_details: Sequence[Mapping[str, Any]],
    rules: Mapping[str, TypeRule] | None = None,
) -> bool:
    """True iff every scope and grant asked for is covered by the ceiling's."""
    if not scope_rules.is_subset(scope, ceiling_scope):
        return False
    if not details:
        return True
    ceiling = grant_rules.grants_of(ceiling_scope, ceiling_details)
    return not grant_rules.uncovered(details, ceiling, rules)


def _wider_grants(
    operation: str,
    parent: Parent,
    details: tuple[Mapping[str, Any], ...],
    rules: Mapping[str, TypeRule] | None,
) -> str:
    """The first requested grant the parent does not cover, as JSON ("" when none);
    renewal and resumption must keep the parent's grants exactly."""
    if operation in ("renew", "resume"):
        if details == parent.details:
            return ""
        changed = [d for d in details if d not in parent.details] or list(parent.details)
        return grant_rules.canonical(changed[0])
    if not details or details == parent.details:  # coverage is reflexive (rules.grants)
        return ""
    ceiling = grant_rules.grants_of(parent.scope, parent.details)
    wider = grant_rules.uncovered(details, ceiling, rules)
    return grant_rules.canonical(wider[0]) if wider else ""
