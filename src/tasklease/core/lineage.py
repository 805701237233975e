"""Lineage with the broker's errors: the one issuance check, joint parents, an app's
ancestor id and ceiling, and the revocation entries that end a token and its descendants."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tasklease.core.config import Config
from tasklease.core.errors import (
    Forbidden,
    InvalidTarget,
    RenewalCeilingExceeded,
    RenewalCountExceeded,
    ScopeViolation,
    TaskleaseError,
)
from tasklease.core.records import AgentRecord, AppRecord, RevocationRecord
from tasklease.core.tokens import Claims
from tasklease.rules import issuance as _issuance
from tasklease.rules.attest import ATTEST_CLAIM, AttestClaimError, attestation_of
from tasklease.rules.grants import TypeRule
from tasklease.rules.issuance import Issuance, Limits, Parent

__all__ = [
    "Refusal",
    "agent_lineage",
    "app_ancestor",
    "app_ids",
    "check_issuance",
    "ending_records",
    "joint_parent",
    "refusal_of",
    "registration_app",
    "registration_ceiling",
    "within_app",
]


_APP = "app:"


def app_ancestor(app_id: str) -> str:
    """The lineage id of an app: removing the app ends every token listing it."""
    return f"{_APP}{app_id}"


def agent_lineage(agent: AgentRecord) -> tuple[str, ...] | None:
    """What an agent's registration descends from: its app (:func:`app_ancestor`), the
    attestation it registered through (``attest:<type>:<attestor>:<subject>``) and every
    other ancestor its first token listed (``AgentRecord.lineage``: the federated domain
    whose evidence it registered with, ``fed:<domain>``). Its own tokens list them; its
    standing is matched against them, and a token delegated or exchanged to it lists them
    too, so that ending any of them ends what the agent holds.

    None when the record's ``attest`` is not a readable claim: the agent is then in no
    good standing (:meth:`tasklease.core.kernel.Kernel.standing`), never read as unattested.
    """
    lineage = (app_ancestor(agent.app_id),) if agent.app_id else ()
    if agent.attest:
        try:
            claim = attestation_of({ATTEST_CLAIM: json.loads(agent.attest)})
        except (ValueError, AttestClaimError):  # a JSONDecodeError is a ValueError
            return None
        if claim is not None:
            lineage = (*lineage, claim.ancestor)
    return (*lineage, *(a for a in agent.lineage if a and a not in lineage))


def registration_ceiling(agent: AgentRecord, config: Config) -> int:
    """The latest ``exp`` any token of the agent's registration may have, as the agent's
    own first token said (``max_exp``: an attestation policy's ``lifetime`` can make it
    earlier than ``renewal_ceiling``); an agent registered before it was kept, its
    registration time plus ``renewal_ceiling``. Never later than its registration time
    plus the ``renewal_ceiling`` configured now, which a renewal holds every token to
    (``Parent.of_token``): a broker restarted with a lower one holds the agents it
    registered before to it, and an agent- or task-level entry, kept that long
    (``Kernel.revocation_expiry``), outlives every resumption it must refuse. Past it the
    agent is in no good standing, as a holder of delegated tokens too."""
    configured = int(agent.registered_at) + config.renewal_ceiling
    return min(agent.ceiling, configured) if agent.ceiling else configured


def app_ids(lineage: tuple[str, ...]) -> tuple[str, ...]:
    """The apps a lineage descends from (its :func:`app_ancestor` ids), oldest first."""
    return tuple(a.removeprefix(_APP) for a in lineage if a.startswith(_APP))


# --- the one issuance check (rules.issuance), with the broker's errors ------------------

_ERRORS: dict[str, type[TaskleaseError]] = {
    "forbidden": Forbidden,
    "scope_violation": ScopeViolation,
    "invalid_target": InvalidTarget,
    "renewal_count_exceeded": RenewalCountExceeded,
    "renewal_ceiling_exceeded": RenewalCeilingExceeded,
}


class Refusal(_issuance.Refusal):
    """The issuance check refused: ``error`` to raise, ``detail`` for the audit log;
    ``allowed`` the scopes the request was held to when the kernel narrowed the parent it
    was given (a registration held to its app's current ceiling), else None."""

    def __init__(self, error: TaskleaseError, detail: str, event_type: str) -> None:
        super().__init__(_issuance.Reason(error.code, error.detail, error.hint), detail, event_type)
        self.error = error
        self.allowed: tuple[str, ...] | None = None


def refusal_of(refusal: _issuance.Refusal) -> Refusal:
    """The broker's :class:`Refusal` for a refusal of the shared rules: the same error
    class and words the check has always answered with."""
    if isinstance(refusal, Refusal):
        return refusal
    reason = refusal.reason
    error = _ERRORS.get(reason.code, Forbidden)(reason.message, hint=reason.hint)
    return Refusal(error, refusal.detail, refusal.event_type)


def check_issuance(
    operation: str,
    parent: Parent,
    *,
    holder: str,
    scope: tuple[str, ...],
    iat: int,
    requested_ttl: int,
    config: Limits,
    dead_ancestor: str = "",
    resource: str | None = None,
    details: tuple[Mapping[str, Any], ...] = (),
    rules: Mapping[str, TypeRule] | None = None,
    holder_lineage: tuple[str, ...] = (),
) -> Issuance:
    """The one issuance check (:func:`tasklease.rules.issuance.check_issuance`) with the
    broker's configuration as its limits; raises :class:`Refusal` carrying the broker's
    error."""
    try:
        return _issuance.check_issuance(
            operation,
            parent,
            holder=holder,
            scope=scope,
            iat=iat,
            requested_ttl=requested_ttl,
            limits=config,
            dead_ancestor=dead_ancestor,
            resource=resource,
            details=details,
            rules=rules,
            holder_lineage=holder_lineage,
        )
    except _issuance.Refusal as refusal:
        raise refusal_of(refusal) from None


def registration_app(parent: Parent) -> str:
    """The app a registration belongs to: the one app its parent descends from (its
    launch token's, its attestor's, or both when they are the same), "" for none. An
    agent is recorded under that app, the registering principal is in it for the issuance
    policy, and what is delegated to the agent lists it (:func:`agent_lineage`): an agent
    registered through an app's attestor is that app's agent whoever made its launch
    token.

    Raises:
        Refusal: the parent descends from two apps (one app's launch token with another
            app's attestor); an agent can be one app's only, and it would escape the
            other's policies and end (event type ``apps``).
    """
    apps = app_ids(parent.lineage)
    if len(set(apps)) > 1:
        raise Refusal(
            Forbidden(
                "the launch token and the attestor belong to different apps",
                hint="register with the launch token alone, or with an attestor of its app",
            ),
            "launch token and attestor of different apps: "
            + " ".join(app_ancestor(a) for a in apps),
            "apps",
        )
    return apps[0] if apps else ""


def joint_parent(
    first: Parent, second: Parent, rules: Mapping[str, TypeRule] | None = None
) -> Parent:
    """:func:`tasklease.rules.issuance.joint_parent`; raises :class:`Refusal`."""
    try:
        return _issuance.joint_parent(first, second, rules)
    except _issuance.Refusal as refusal:
        raise refusal_of(refusal) from None


def within_app(
    parent: Parent, app: AppRecord, rules: Mapping[str, TypeRule] | None = None
) -> Parent:
    """``parent`` (a registration's launch token or attestation) bounded by ``app``'s
    ceiling as it is now: its scopes and grants (:func:`joint_parent`). An app's ceiling
    can be narrowed after it made a launch token or got an attestor; what registers under
    them from then on is held to the narrower one (docs/authority.md, rule 4)."""
    ceiling = Parent(
        holder=parent.holder,
        scope=app.scopes,
        details=app.authorization_details,
        audience=(),
        principal="",
        lineage=(),
        ceiling=parent.ceiling,
        ttl=parent.ttl,
        renewals=0,
    )
    return joint_parent(parent, ceiling, rules)


def ending_records(claims: Claims, revoked_at: int, config: Config) -> list[RevocationRecord]:
    """The revocation entries that end ``claims`` and every token descended from it.

    Level ``token`` ends the token itself; level ``chain`` on its ``jti`` and on its grant
    ends the tokens delegated from it or from any renewal of it (they list them in their
    ``lineage``), and on its grant's :func:`~tasklease.rules.issuance.renewal_ancestor`
    every renewal of its grant: the ones before it are ended already (a renewal ends its
    predecessor), so what this ends is a successor minted from it by a renewal that raced
    this end and committed first, and that successor's own renewals. Each lives until
    nothing it could match can still be valid.
    """
    expires = revoked_at + config.max_ttl + config.clock_skew + 1
    records = [
        RevocationRecord("token", claims.jti, revoked_at, claims.exp + config.clock_skew + 1),
        RevocationRecord("chain", claims.jti, revoked_at, expires),
    ]
    if claims.grant_id != claims.jti:
        records.append(RevocationRecord("chain", claims.grant_id, revoked_at, expires))
    renewed = _issuance.renewal_ancestor(claims.grant_id)
    records.append(RevocationRecord("chain", renewed, revoked_at, expires))
    return records
