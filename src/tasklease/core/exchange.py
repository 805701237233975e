"""Token exchange (RFC 8693): a token becomes the parent of a new one, through the one
issuance check.

Two cases, told apart by the subject token's domain (the trust domain of its ``sub``):

* **narrowing** (our own domain): the holder of ``subject_token`` derives a narrower token
  from it: fewer scopes, one audience (``resource``/``audience``, RFC 8707), no longer
  lifetime. Same holder, same chain, same binding; it descends from the subject token
  (ending that ends it). The subject token is the caller's credential and is checked as
  one, binding proof included. Kernel operation ``narrow``.
* **cross-domain** (a federated domain ``D``): ``subject_token`` is ``D``'s token naming
  ``spiffe://<our trust domain>`` as its audience, verified with ``D``'s last good bundle
  (``core.foreign``); ``actor_token`` is the caller's own agent token, checked as any
  credential (binding proof included). The federation record's mapping policy says what
  ``D``'s scopes grant here (only narrower). The new token is the actor's, bound to its
  registered key, carrying ``D``'s delegation chain (re-signed by us after checking
  ``D``'s signatures) plus the hop from ``D``'s holder to the actor, ``D``'s principal,
  and ``D``'s ancestry namespaced in its lineage. Kernel operation ``exchange``.

Refusals are audited once each (``token_exchange_denied``) with a ``denial_id``, and
raised as the token endpoint answers them (RFC 6749 section 5.2, RFC 8693 section
2.2.2): ``unsupported_grant_type``, ``invalid_scope``, ``invalid_target``, and
``invalid_request`` for everything about the tokens themselves.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from tasklease.core.audience import validate_resource
from tasklease.core.auditformat import AuditEntry, clipped, detail_field, reason_text
from tasklease.core.callers import lineage, refused
from tasklease.core.calls import budget_holder, budgets_for
from tasklease.core.clock import format_rfc3339
from tasklease.core.delegation import record_signing_input
from tasklease.core.errors import (
    Forbidden,
    InternalError,
    InvalidAuthorizationDetails,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidScope,
    RateLimited,
    ScopeViolation,
    TaskleaseError,
    Unauthorized,
    Unavailable,
    UnsupportedGrantType,
    UseDPoPNonce,
)
from tasklease.core.federation import Federation
from tasklease.core.foreign import (
    ForeignProbe,
    ForeignRejected,
    ForeignToken,
    LocalAncestry,
    foreign_parent,
    map_scopes,
    read_foreign,
    subject_domain,
)
from tasklease.core.introspection import is_reference_token
from tasklease.core.issuing import (
    binding_suffix,
    clamp_ttl,
    cnf_of,
    listed,
    mint_granted,
    size_adapted,
)
from tasklease.core.kernel import (
    IssuedToken,
    Kernel,
    Parent,
    RequestContext,
    Service,
    read_in_write,
    with_denial,
)
from tasklease.core.keys import KeyRing
from tasklease.core.lineage import Refusal, agent_lineage
from tasklease.core.peerfeed import PeerFeeds
from tasklease.core.policyrequest import agent_actor
from tasklease.core.records import CallBudget
from tasklease.core.revocation import ends
from tasklease.core.scopes import scope_param
from tasklease.core.signing import SigningKeys
from tasklease.core.store import WriteTx
from tasklease.core.tokencheck import TokenCheck
from tasklease.core.tokens import KIND_AGENT, Claims, DelegationRecord, agent_key_of
from tasklease.rules.jsonnames import JSONTextError, strict_json

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "GRANT_TYPE",
    "JWT_TOKEN_TYPE",
    "Exchange",
    "ExchangeRequest",
    "Exchanged",
]

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN
_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
_AGENT = frozenset({KIND_AGENT})


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """An RFC 8693 request's parameters as sent (checked by :meth:`Exchange.exchange`).

    ``scope`` is the space-separated string of RFC 6749 section 3.3; ``resource`` the one
    resource or audience asked for (the adapter merges RFC 8707 ``resource`` and RFC 8693
    ``audience``); ``authorization_details`` the structured grants asked for (RFC 9396
    section 6: a JSON array, as text in a form or as a list).
    """

    grant_type: object = None
    subject_token: object = None
    subject_token_type: object = None
    actor_token: object = None
    actor_token_type: object = None
    requested_token_type: object = None
    scope: object = None
    resource: object = None
    authorization_details: object = None


@dataclass(frozen=True, slots=True)
class Exchanged:
    """The issued token and what the RFC 8693 response says of it."""

    issued: IssuedToken
    token: str
    token_type: str  # "DPoP" for a DPoP-bound token, else "Bearer"
    scope: tuple[str, ...]
    issued_token_type: str = ACCESS_TOKEN_TYPE
    details: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class _TaskProbe:
    """Our task as the revocation index sees a registration for it made at ``iat``."""

    task_id: str
    iat: int
    jti: str = ""
    sub: str = ""
    delegation_chain: tuple[()] = ()
    lineage: tuple[str, ...] = ()


def _token_param(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"missing required field: {name}")
    return value


def _token_type_param(value: object, name: str) -> None:
    if value not in _TOKEN_TYPES:
        raise InvalidRequest(
            f"{name} must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}",
            hint="tasklease exchanges its own agent access tokens (JWTs)",
        )


def _outward(refusal: Refusal) -> TaskleaseError:
    """The error a refusal of the issuance check answers with: a widening of scope is
    ``invalid_scope``, of grants ``invalid_authorization_details`` (RFC 9396 section 5);
    depth and cycles are not about scope."""
    error = refusal.error
    if isinstance(error, ScopeViolation):
        if refusal.detail.startswith("scope would widen"):
            return InvalidScope(error.detail)
        if refusal.detail.startswith("grants would widen"):
            return InvalidAuthorizationDetails(
                "requested authorization_details exceed what the subject token grants"
            )
        return Forbidden(error.detail)
    return error


def _details_param(value: object) -> object:
    """RFC 9396 section 6: ``authorization_details`` in a form is JSON text."""
    if isinstance(value, str):
        try:
            return strict_json(value, "authorization_details")
        except JSONTextError as exc:
            raise InvalidAuthorizationDetails(
                f"authorization_details must be a JSON array ({exc})"
            ) from None
    return value


def _as_token_endpoint_error(exc: TaskleaseError) -> TaskleaseError:
    """``exc`` as the token endpoint answers it (RFC 8693 section 2.2.2): a subject or
    actor token that is invalid, or unacceptable by policy, is ``invalid_request``, except
    where its DPoP proof failed: ``use_dpop_nonce`` with a fresh ``DPoP-Nonce`` for a proof
    without the broker's nonce (RFC 9449 section 8), ``invalid_dpop_proof`` for any other
    refused proof (section 5). The ``denial_id`` (and its one audit event) and the
    internal reason are kept."""
    if isinstance(exc, InvalidRequest | Unavailable | InternalError | RateLimited):
        return exc
    outward: TaskleaseError
    if exc.dpop_nonce:
        outward = UseDPoPNonce(reason=exc.reason, dpop_nonce=exc.dpop_nonce)
    elif exc.challenge == ("DPoP", "invalid_dpop_proof"):
        outward = InvalidDPoPProof("invalid DPoP proof", reason=exc.reason)
    else:
        outward = InvalidRequest(exc.detail, reason=exc.reason, hint=exc.hint)
    outward.denial_id = exc.denial_id
    return outward


class Exchange(Service):
    """RFC 8693 token exchange. Thread-safe; one per broker."""

    def __init__(
        self,
        kernel: Kernel,
        keys: SigningKeys,
        tokens: TokenCheck,
        federation: Federation,
        feeds: PeerFeeds,
    ) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._tokens = tokens
        self._federation = federation
        self._feeds = feeds

    def exchange(self, request: ExchangeRequest, ctx: RequestContext) -> Exchanged:
        """Issue a token from ``request`` (module docstring), or raise (audited).

        Raises:
            UnsupportedGrantType: ``grant_type`` is not token exchange.
            InvalidTarget: ``resource`` is malformed or would widen the audience.
            InvalidScope: ``scope`` asks for more than the subject token grants here.
            InvalidRequest: a parameter is missing or malformed (not audited); or a token
                is invalid, or not acceptable here (audited, with a ``denial_id``).
            Unavailable: state could not be read or written.
        """
        try:
            return self._exchange(request, ctx)
        except TaskleaseError as exc:
            raise _as_token_endpoint_error(exc) from None

    def _exchange(self, request: ExchangeRequest, ctx: RequestContext) -> Exchanged:
        started = time.perf_counter()
        if request.grant_type != GRANT_TYPE:
            if not isinstance(request.grant_type, str) or not request.grant_type:
                raise InvalidRequest("missing required field: grant_type")
            raise UnsupportedGrantType(
                f"unsupported grant_type: {clipped(request.grant_type, 80)}",
                hint=f"this endpoint serves {GRANT_TYPE} and client_credentials",
            )
        subject = _token_param(request.subject_token, "subject_token")
        _token_type_param(request.subject_token_type, "subject_token_type")
        actor: str | None = None
        if request.actor_token is not None:
            actor = _token_param(request.actor_token, "actor_token")
            _token_type_param(request.actor_token_type, "actor_token_type")
        elif request.actor_token_type is not None:
            raise InvalidRequest("actor_token_type is given without actor_token")
        if request.requested_token_type not in (None, "", ACCESS_TOKEN_TYPE):
            raise InvalidRequest(
                f"requested_token_type must be {ACCESS_TOKEN_TYPE}",
                hint="tasklease issues agent access tokens",
            )
        scope = scope_param(request.scope)
        resource = validate_resource(request.resource, field="resource")
        details: tuple[Mapping[str, Any], ...] | None = None
        if request.authorization_details not in (None, ""):
            details = self._kernel.grant_types.check(
                _details_param(request.authorization_details), field="authorization_details"
            )
        own = self._config.trust_domain
        if is_reference_token(subject):
            domain = own
        else:
            try:
                domain = subject_domain(subject, self._config.max_token_bytes)
            except ForeignRejected as exc:
                raise self._kernel.deny(
                    Unauthorized("subject_token is invalid", reason=exc.reason),
                    self._entry(ctx, f"subject_token refused: {reason_text(exc.reason)}"),
                ) from None
        if domain == own:
            if actor is not None and actor != subject:
                raise InvalidRequest(
                    "actor_token is for a federated domain's subject_token",
                    hint="to hand authority to another agent of this broker, use /v1/delegate",
                )
            issued = self._narrow(subject, scope, resource, ctx, details)
            kind = "narrow"
        else:
            if actor is None:
                raise InvalidRequest(
                    "missing required field: actor_token",
                    hint="a federated domain's token is exchanged by the agent that will hold "
                    "the new one: send its own token as actor_token",
                )
            if details:
                raise InvalidAuthorizationDetails(
                    "a federated domain's token is exchanged for scopes only",
                    hint="its federation record maps scopes; ask for authorization_details "
                    "by delegation here",
                )
            issued = self._cross(domain, subject, actor, scope, resource, ctx)
            kind = "exchange"
        self._metrics.tokens_issued.labels(kind).inc()
        self._metrics.issuance_seconds.labels(kind).observe(time.perf_counter() - started)
        return issued

    # --- the caller's credential -------------------------------------------------------

    def _credential(self, token: str, ctx: RequestContext) -> Claims:
        """An agent token presented as the caller's own credential: checked as any
        ``Authorization`` header would be (signature, claims, revocation, binding proof
        on this request, high assurance), refusals audited."""
        scheme = "DPoP" if ctx.dpop else "Bearer"
        return self._tokens.authenticate(f"{scheme} {token}", ctx, kinds=_AGENT)

    def _entry(self, ctx: RequestContext, detail: str, claims: Claims | None = None) -> AuditEntry:
        if claims is None:
            return AuditEntry(
                "token_exchange_denied",
                outcome="denied",
                request_id=ctx.request_id,
                resource=ctx.path,
                detail=detail,
            )
        return replace(
            refused("token_exchange_denied", claims, ctx), resource=ctx.path, detail=detail
        )

    def _refused(
        self, refusal: Refusal, ctx: RequestContext, claims: Claims, what: str
    ) -> NoReturn:
        if refusal.event_type in ("attenuation", "audience"):
            self._metrics.scope_rejections.labels(ctx.route or "/v1/oauth/token").inc()
        raise self._kernel.deny(
            _outward(refusal), self._entry(ctx, f"{what} | {refusal.detail}", claims)
        ) from None

    # --- narrowing (our own domain) ----------------------------------------------------

    def _narrow(
        self,
        subject: str,
        scope: tuple[str, ...] | None,
        resource: str | None,
        ctx: RequestContext,
        details: tuple[Mapping[str, Any], ...] | None = None,
    ) -> Exchanged:
        kernel, cfg = self._kernel, self._config
        claims = self._credential(subject, ctx)
        holder, dead = kernel.agent_standing(claims.sub, lifetime=False)
        iat = int(kernel.now())
        wanted = scope if scope is not None else claims.scope
        # Absent, each keeps what the subject token holds; given, each narrows apart.
        grants = details if details is not None else claims.details
        try:
            issuance = kernel.check_issuance(
                "narrow",
                Parent.of_token(claims, cfg),
                holder=claims.sub,
                scope=wanted,
                iat=iat,
                requested_ttl=clamp_ttl(None, cfg.default_ttl, cfg),
                dead_ancestor=dead,
                resource=resource,
                details=grants,
                actor=agent_actor(claims, holder),
            )
        except Refusal as refusal:
            self._refused(refusal, ctx, claims, f"narrowing jti={claims.jti}")
        token, new = mint_granted(
            self._keys,
            cfg,
            issuance,
            iat=iat,
            ids=self._kernel.token_ids,
            sub=claims.sub,
            aud=issuance.audience,
            client_id=claims.client_id,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            oiat=claims.oiat,
            chain=claims.delegation_chain,
            agent_key=agent_key_of(claims.raw),
            cnf=cnf_of(claims),
        )
        detail = (
            f"narrowed jti={claims.jti} to jti={new.jti} scope={listed(new.scope)} exp={new.exp}"
            f"{issuance.decision}"
        )
        budgets = budgets_for(
            budget_holder(new),
            issuance.details,
            expires_at=issuance.max_exp + cfg.clock_skew,
            parent_holder=budget_holder(claims),
            parent_grants=claims.details,
            rules=kernel.grant_types.rules({str(d["type"]) for d in issuance.details}),
        )
        return self._issue(
            token, new, claims, detail, ctx, budgets, what=f"narrowing jti={claims.jti}"
        )

    # --- cross-domain ------------------------------------------------------------------

    def _cross(
        self,
        domain: str,
        subject: str,
        actor_token: str,
        scope: tuple[str, ...] | None,
        resource: str | None,
        ctx: RequestContext,
    ) -> Exchanged:
        kernel, cfg = self._kernel, self._config
        actor = self._credential(actor_token, ctx)
        now = kernel.now()
        own = cfg.trust_domain
        try:
            record = self._federation.record(domain)
            keys = self._federation.trusted_keys(domain, now)
            ft = read_foreign(subject, domain, keys, own_domain=own, now=now, config=cfg)
        except TaskleaseError as exc:
            raise kernel.deny(
                Unauthorized("subject_token is invalid", reason=exc.reason),
                self._entry(
                    ctx, f"subject_token of {domain} refused: {reason_text(exc.reason)}", actor
                ),
            ) from None
        except ForeignRejected as exc:
            raise kernel.deny(
                Unauthorized("subject_token is invalid", reason=exc.reason),
                self._entry(ctx, f"subject_token refused: {reason_text(exc.reason)}", actor),
            ) from None
        stale = self._feeds.stale(record, now)
        if stale:
            # A revocation made there since the feed went quiet cannot have reached us:
            # the token may have ended. Refused until the feed is current again.
            raise kernel.deny(
                Unavailable(
                    f"revocations of {domain} are not current here: try again later",
                    retry_after=5,
                ),
                self._entry(ctx, f"subject_token of {domain} refused: {reason_text(stale)}", actor),
            )
        foreign = ft.claims
        about = (
            f"{detail_field('subject', foreign.sub)} of {domain} "
            f"{detail_field('jti', foreign.jti)} actor={actor.sub}"
        )
        granted = map_scopes(foreign.scope, record.scope_map, record.scope_ceiling)
        if not granted:
            raise kernel.deny(
                InvalidScope("the subject_token grants no scope here"),
                self._entry(
                    ctx,
                    f"{about} | no scope of [{' '.join(foreign.scope)}] maps here "
                    f"(map and ceiling of {domain})",
                    actor,
                ),
            )
        try:
            parent, local = foreign_parent(
                ft, scope=granted, max_ttl=record.max_ttl, own_domain=own, config=cfg
            )
        except ForeignRejected as exc:
            raise kernel.deny(
                Forbidden("the subject_token's chain is too long to continue here"),
                self._entry(ctx, f"{about} | {reason_text(exc.reason)}", actor),
            ) from None
        # The actor becomes the holder, as a delegate does: within its lifetime too.
        target, dead = kernel.agent_standing(actor.sub)
        dead = dead or self._ended_here(ft, parent, local)
        iat = math.floor(now)
        try:
            issuance = kernel.check_issuance(
                "exchange",
                parent,
                holder=actor.sub,
                scope=scope if scope is not None else granted,
                iat=iat,
                requested_ttl=clamp_ttl(None, cfg.default_ttl, cfg),
                dead_ancestor=dead,
                resource=resource,
                actor=agent_actor(actor, target),
                domain=domain,
                holder_agent=target,
            )
        except Refusal as refusal:
            self._refused(refusal, ctx, actor, about)
        if target is None:  # pragma: no cover - agent_standing found it a moment ago
            raise kernel.deny(
                Forbidden("an ancestor credential has ended"), self._entry(ctx, about)
            )
        ring = self._keys.ring
        chain = _resigned(foreign.delegation_chain, foreign.sub, ring)
        delegated_at = format_rfc3339(now)
        hop = record_signing_input(foreign.sub, actor.sub, foreign.scope, delegated_at)
        chain = (
            *chain,
            DelegationRecord(
                agent=foreign.sub,
                scope=foreign.scope,
                delegated_at=delegated_at,
                signature=ring.sign_detached(hop).hex(),
            ),
        )
        token, new = mint_granted(
            self._keys.signer(ring),
            cfg,
            issuance,
            iat=iat,
            ids=self._kernel.token_ids,
            sub=actor.sub,
            aud=issuance.audience,
            client_id=actor.client_id,
            task_id=foreign.task_id,
            orch_id=foreign.orch_id,
            oiat=foreign.oiat,
            chain=chain,
            agent_key=target.public_key,
            cnf=json.loads(target.cnf) if target.cnf else None,
        )
        self._metrics.delegation_depth.observe(len(chain))
        detail = (
            f"cross-domain exchange {about} {detail_field('iss', clipped(foreign.iss, 128))} "
            f"granted={listed(granted)} scope={listed(new.scope)} depth={len(chain)} "
            f"jti={new.jti}{issuance.decision}"
        )
        return self._issue(token, new, actor, detail, ctx, what=about)

    def _ended_here(self, ft: ForeignToken, parent: Parent, local: LocalAncestry) -> str:
        """Why an ancestor of a foreign token has ended by our own records ("" if none):
        our operators' revocations of its agents or lineage, and for a token that went
        out from here and came back, our own agents' and tasks' standing."""
        kernel = self._kernel
        level = kernel.revocations.match(ForeignProbe(ft.claims, parent.lineage))
        if level is not None:
            return f"subject_token revoked here at level {level}"
        if local.agents and not (
            local.hop_out and any(kernel.token_ids.vouches(i, local.hop_out) for i in local.ids)
        ):
            # A chain that went out from here lists the ids of our token it came from, and
            # that token's id carries our MAC of the hop out it allowed (core.tokenids):
            # holder, scope, chain, task, principal, the domain it crossed to. A chain
            # naming our agents without such an id (none at all, ids a peer made up, or
            # ids of tokens that never crossed there as shown) is the peer's word alone,
            # which we would sign as our own record of a hop our agent never made.
            to = local.out_to or "no domain"
            return (
                f"the chain names our agent {local.agents[0]} but none of our token ids "
                f"vouches for its hop out to {to}: it did not go out from here"
            )
        theirs: set[str] = set()
        for agent in local.agents:
            record, why = kernel.agent_standing(agent, lifetime=False)
            if why:
                return f"our agent {agent} in the chain: {why}"
            if record is not None:
                theirs.update(agent_lineage(record) or ())
        for app in local.apps:
            if app not in theirs:
                # An app of ours read from the peer's lineage names what the token descends
                # from: its audit events' app, the App the issuance policy sees its holder
                # in. Only one an agent of ours in the chain registered under is ours to
                # name; any other is the peer's word (a chain naming none of our agents
                # descends from no app of ours at all).
                return (
                    f"the chain names our {app} but no agent of ours in it registered "
                    "under that app: it did not come from there"
                )
        for task in local.tasks:
            level = kernel.revocations.match(_TaskProbe(task, ft.claims.oiat))
            if level is not None:
                return f"our task {task} of the chain revoked at level {level}"
        return ""

    # --- issuing -----------------------------------------------------------------------

    def _issue(
        self,
        token: str,
        new: Claims,
        caller: Claims,
        detail: str,
        ctx: RequestContext,
        budgets: Sequence[CallBudget] = (),
        *,
        what: str,
    ) -> Exchanged:
        """Write ``new`` (refusals audited as the checks before it audit theirs, ``what``
        naming the request)."""
        token, reference = size_adapted(token, new, self._config)
        refusals: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            refusals.clear()
            ended = self._kernel.revoked_in(tx, new)
            if ended is not None:
                # An entry another replica committed, not applied here yet, ends the new
                # token at birth: the presented token's own (its holder, its task), or an
                # ancestor's (the subject token, a delegator, a federated domain). Refused
                # as the replica that wrote it refuses the presented token or its parent.
                refusal: TaskleaseError = (
                    Unauthorized("token verification failed")
                    if ends(ended, caller)
                    else Forbidden("an ancestor credential has ended")
                )
                refusals.append(refusal)
                why = f"{what} | its token would be born {read_in_write(ended)}"
                return [with_denial(refusal, self._entry(ctx, why, caller))]
            if reference is not None:
                tx.insert_reference_token(reference)
            for budget in budgets:
                tx.put_call_budget(budget)
            return [
                AuditEntry(
                    "token_exchanged",
                    agent_id=new.sub,
                    task_id=new.task_id,
                    orch_id=new.orch_id,
                    request_id=ctx.request_id,
                    deleg_depth=len(new.delegation_chain),
                    deleg_chain_hash=new.chain_hash,
                    detail=f"{detail} by={caller.sub}{binding_suffix(new, reference)}",
                    **lineage(new),
                )
            ]

        self._kernel.commit(unit)
        if refusals:
            raise refusals[0]
        cnf = cnf_of(new)
        return Exchanged(
            issued=IssuedToken(token, new),
            token=token,
            token_type="DPoP" if cnf and "jkt" in cnf else "Bearer",
            scope=new.scope,
            details=new.details,
        )


def _resigned(
    chain: Sequence[DelegationRecord], subject: str, ring: KeyRing
) -> tuple[DelegationRecord, ...]:
    """A foreign chain's records (their signatures already checked with the foreign
    bundle), signed by us: our later hops and verifiers check one signer."""
    out: list[DelegationRecord] = []
    for i, record in enumerate(chain):
        delegate = chain[i + 1].agent if i + 1 < len(chain) else subject
        message = record_signing_input(record.agent, delegate, record.scope, record.delegated_at)
        out.append(replace(record, signature=ring.sign_detached(message).hex()))
    return tuple(out)
