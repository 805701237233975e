"""Delegation: an agent hands a narrower part of its authority to another registered agent.

The kernel's issuance check decides what the delegated token may be (scope and audience
only narrow, lifetime within the delegator's, depth bounded, no agent twice in a chain,
the human principal carried on); this service adds the hop's signed record
(``core.delegation``) and binds the token to the delegate's own key or certificate.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from tasklease.core.audience import validate_resource
from tasklease.core.auditformat import AuditEntry, clipped, detail_field
from tasklease.core.callers import about, lineage, refused, require_agent
from tasklease.core.calls import budget_holder, budgets_for
from tasklease.core.clock import format_rfc3339
from tasklease.core.delegation import record_signing_input, verify_chain_records
from tasklease.core.errors import (
    InvalidRequest,
    NotFound,
    TaskleaseError,
    Unauthorized,
    Unavailable,
)
from tasklease.core.issuing import (
    binding_suffix,
    clamp_ttl,
    listed,
    mint_granted,
    size_adapted,
    token_challenge,
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
from tasklease.core.lineage import Refusal
from tasklease.core.pending import Pending, complete
from tasklease.core.policyrequest import agent_actor
from tasklease.core.revocation import ends
from tasklease.core.scopes import validate_scopes
from tasklease.core.signing import SigningKeys, verify_keys
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims, DelegationRecord

__all__ = ["Delegating"]


class Delegating(Service):
    """The delegate operation. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel, keys: SigningKeys) -> None:
        super().__init__(kernel)
        self._keys = keys

    def delegate(
        self,
        claims: Claims,
        *,
        delegate_to: object,
        scope: object,
        ttl: object,
        ctx: RequestContext,
        resource: object = None,
        authorization_details: object = None,
    ) -> IssuedToken:
        """Hand a subset of the caller's scope and grants to another registered agent.

        The delegated token can only narrow: scope ⊆ the caller's, lifetime ≤ the caller's
        remaining lifetime, depth ≤ ``max_delegation_depth`` (checked here and on every
        validation), audience equal to the caller's or narrower (``resource``, RFC 8707).
        ``authorization_details`` (RFC 9396) are the structured grants handed on, each
        covered by one of the caller's scopes or grants (``rules.grants``); ``scope`` may
        be absent when they are given. Only agent tokens delegate: admin and app authority
        never flows into an agent through delegation. The token is bound to the delegate's
        own registered key or certificate (``cnf``), never the delegator's: the delegate
        proves possession.
        """
        return complete(
            self._kernel,
            self.prepare_delegate(
                claims,
                delegate_to=delegate_to,
                scope=scope,
                ttl=ttl,
                ctx=ctx,
                resource=resource,
                authorization_details=authorization_details,
            ),
        )

    def prepare_delegate(
        self,
        claims: Claims,
        *,
        delegate_to: object,
        scope: object,
        ttl: object,
        ctx: RequestContext,
        resource: object = None,
        authorization_details: object = None,
    ) -> Pending[IssuedToken]:
        """:meth:`delegate` checked and signed, not written (``core.pending``)."""
        started = time.perf_counter()
        cfg = self._config
        kernel = self._kernel
        if not isinstance(delegate_to, str) or not delegate_to:
            raise InvalidRequest("missing required field: delegate_to")
        details = kernel.grant_types.check(authorization_details, field="authorization_details")
        if scope is None or scope == []:
            if not details:
                raise InvalidRequest("missing required field: scope")
            requested: tuple[str, ...] = ()
        else:
            requested = validate_scopes(scope, field="scope")
        if ttl is not None and (type(ttl) is not int):
            raise InvalidRequest("ttl must be an integer number of seconds")
        named_resource = validate_resource(resource, field="resource")
        require_agent(kernel, claims, "delegate", ctx)
        depth = len(claims.delegation_chain)
        denied = replace(
            refused("delegation_attenuation_violation", claims, ctx), deleg_depth=depth
        )
        parties = f"delegator={claims.sub} | {detail_field('target', clipped(delegate_to, 256))}"
        # Both ends in good standing (invariant 1): the delegator is an ancestor of what
        # it hands on, its own registration's lifetime left to the check's ceilings.
        holder, held = kernel.holder(claims)
        target, dead = kernel.agent_standing(delegate_to)
        if held:
            dead = f"delegator {claims.sub}: {held}"
        now = kernel.now()
        iat = int(now)
        want = clamp_ttl(ttl if isinstance(ttl, int) else None, cfg.delegation_default_ttl, cfg)
        try:
            issuance = self._kernel.check_issuance(
                "delegate",
                Parent.of_token(claims, cfg),
                holder=delegate_to,
                scope=requested,
                iat=iat,
                requested_ttl=want,
                dead_ancestor=dead,
                resource=named_resource,
                details=details,
                actor=agent_actor(claims, holder),
                holder_agent=target,
            )
        except Refusal as refusal:
            if refusal.event_type == "audience":
                raise kernel.deny(
                    refusal.error,
                    replace(
                        denied,
                        detail=f"audience would widen | {parties} | "
                        f"{detail_field('requested', named_resource)} "
                        f"| allowed={listed(claims.aud)}",
                    ),
                ) from None
            if refusal.event_type != "denied":
                self._metrics.scope_rejections.labels("/v1/delegate").inc()
            if refusal.event_type == "depth":
                raise kernel.deny(
                    refusal.error,
                    replace(
                        denied,
                        event_type="delegation_depth_exceeded",
                        detail=f"{refusal.detail} | {parties}",
                    ),
                ) from None
            if refusal.event_type == "policy":
                raise kernel.deny(
                    refusal.error,
                    replace(
                        denied,
                        event_type="delegation_denied",
                        detail=f"{refusal.detail} | {parties}",
                    ),
                ) from None
            if refusal.event_type == "attenuation":
                if refusal.detail.startswith(("scope would widen", "grants would widen")):
                    # More than the presented token holds (RFC 6750 section 3.1).
                    refusal.error.challenge = token_challenge(claims, "insufficient_scope")
                raise kernel.deny(
                    refusal.error,
                    replace(
                        denied,
                        detail=f"delegation_attenuation_violation | {parties} | {refusal.detail}",
                    ),
                ) from None
            if refusal.event_type == "denied" and dead and not held:
                # An unknown delegate and a dead one look the same to the caller.
                raise kernel.deny(
                    NotFound("delegate agent not found"),
                    replace(denied, event_type="delegation_denied", detail=f"{dead} | {parties}"),
                ) from None
            # The delegator's own lineage has ended (a chain-level entry on an ancestor), it
            # is no longer in good standing, or its token is at its end: it holds nothing
            # left to hand on.
            raise kernel.deny(
                Unauthorized(
                    "token verification failed",
                    reason=refusal.detail,
                    challenge=token_challenge(claims),
                ),
                replace(
                    about(claims),
                    event_type="token_auth_failed",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"delegator has nothing to hand on: {refusal.detail} jti={claims.jti}",
                ),
            ) from None
        if target is None:  # pragma: no cover - an unknown delegate is refused above
            raise NotFound("delegate agent not found")
        audience = issuance.audience
        # One ring for the whole hop: the chain is checked, extended and signed under it.
        ring = self._keys.ring
        if not verify_chain_records(claims.delegation_chain, claims.sub, lambda: verify_keys(ring)):
            raise kernel.deny(
                Unauthorized(
                    "token verification failed",
                    reason="forged delegation record",
                    challenge=token_challenge(claims),
                ),
                AuditEntry(
                    "token_auth_failed",
                    outcome="denied",
                    agent_id=claims.sub,
                    request_id=ctx.request_id,
                    detail="delegation chain carries a record without a valid broker signature",
                ),
            )
        delegated_at = format_rfc3339(now)
        message = record_signing_input(claims.sub, delegate_to, claims.scope, delegated_at)
        record = DelegationRecord(
            agent=claims.sub,
            scope=claims.scope,
            delegated_at=delegated_at,
            signature=ring.sign_detached(message).hex(),
        )
        chain = (*claims.delegation_chain, record)
        token, new_claims = mint_granted(
            self._keys.signer(ring),
            cfg,
            issuance,
            iat=iat,
            ids=self._kernel.token_ids,
            sub=delegate_to,
            aud=audience,
            client_id=claims.client_id,
            task_id=claims.task_id,
            orch_id=claims.orch_id,
            oiat=claims.oiat,
            chain=chain,
            agent_key=target.public_key,
            cnf=json.loads(target.cnf) if target.cnf else None,
        )
        token, reference = size_adapted(token, new_claims, cfg)
        budgets = budgets_for(
            budget_holder(new_claims),
            issuance.details,
            expires_at=issuance.max_exp + cfg.clock_skew,
            parent_holder=budget_holder(claims),
            parent_grants=claims.details,
            rules=kernel.grant_types.rules({str(d["type"]) for d in issuance.details}),
        )

        refusals: list[TaskleaseError] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            refusals.clear()
            # The delegator's chain entry, and every other entry that would end the
            # delegation's token, in one lookup.
            wait, ended = kernel.reissue_wait_or_revoked_in(
                tx, new_claims, wait_on=("chain", claims.sub), iat=iat
            )
            if wait:
                # A chain entry on the delegator, made moments ago here or on another
                # replica (read through this write), ends its delegations made by every
                # clock within the skew before it, so one made now would be born revoked
                # (docs/decisions.md 142, 353): refused, to be asked again after it.
                error = Unavailable(
                    "the delegator's delegations were revoked moments ago: delegate again "
                    f"in {wait} s",
                    retry_after=wait,
                )
                refusals.append(error)
                return [
                    with_denial(
                        error,
                        replace(
                            denied,
                            event_type="delegation_denied",
                            detail=f"delegator's delegations revoked moments ago: its chain "
                            f"entry ends delegations until {iat + wait - 1}; come back in "
                            f"{wait}s | {parties}",
                        ),
                    )
                ]
            # The delegation's token is born revoked by any other entry another replica
            # committed that this one has not applied yet. A chain entry on its lineage
            # (the delegator's token or grant, given up or revoked with what descends from
            # it) ends the delegator's authority to hand on, not the delegate: only an
            # entry ending neither names the delegate (its agent or task).
            if (
                ended is not None
                and not ends(ended, claims)
                and not (ended.level == "chain" and ended.target in new_claims.lineage)
            ):
                # The delegate ended (its agent or task revoked), the delegator not: an
                # unknown delegate and a dead one look the same to the caller, as above.
                gone = NotFound("delegate agent not found")
                refusals.append(gone)
                return [
                    with_denial(
                        gone,
                        replace(
                            denied,
                            event_type="delegation_denied",
                            detail=f"delegate {read_in_write(ended)} | {parties}",
                        ),
                    )
                ]
            if ended is not None:
                # The delegator (or an ancestor of its token) revoked: it holds nothing
                # left to hand on, as refused above.
                revoked = Unauthorized(
                    "token verification failed",
                    reason=f"delegator {read_in_write(ended)}",
                    challenge=token_challenge(claims),
                )
                refusals.append(revoked)
                return [
                    with_denial(
                        revoked,
                        replace(
                            about(claims),
                            event_type="token_auth_failed",
                            outcome="denied",
                            request_id=ctx.request_id,
                            detail=f"delegator has nothing to hand on: delegator "
                            f"{read_in_write(ended)} jti={claims.jti}",
                        ),
                    )
                ]
            if reference is not None:
                tx.insert_reference_token(reference)
            for budget in budgets:
                tx.put_call_budget(budget)
            return [
                AuditEntry(
                    "delegation_created",
                    agent_id=delegate_to,
                    task_id=claims.task_id,
                    orch_id=claims.orch_id,
                    request_id=ctx.request_id,
                    deleg_depth=len(chain),
                    deleg_chain_hash=new_claims.chain_hash,
                    **lineage(new_claims),
                    detail=f"delegation from {claims.sub} to {delegate_to} "
                    f"scope={listed(requested)} depth={len(chain)} jti={new_claims.jti} "
                    f"parent_jti={claims.jti} ttl={new_claims.exp - new_claims.iat}"
                    f"{binding_suffix(new_claims, reference)}{issuance.decision}",
                )
            ]

        def done() -> IssuedToken:
            if refusals:
                raise refusals[0]
            self._metrics.delegation_depth.observe(len(chain))
            self._metrics.tokens_issued.labels("delegate").inc()
            elapsed = time.perf_counter() - started
            self._metrics.issuance_seconds.labels("delegate").observe(elapsed)
            return IssuedToken(token, new_claims)

        return Pending(unit, done)
