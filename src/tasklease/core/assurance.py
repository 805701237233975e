"""High-assurance validation for critical scopes.

Ordinary validation trusts the in-memory revocation index (decision 5): a revocation
committed by another process is enforced here after the next poll. For scopes an operator
declares critical (``critical_scopes``, e.g. ``write:payments:*``) that window is not
acceptable, so validation of a token carrying one (in its ``scope`` claim or as a
limited ``scope`` grant, ``rules.grants.holds_critical_scope``) also reads the store: the
revocation entries that could match this token, by primary key, and the holder's own
agent record (it must exist and be active). Nothing cached is consulted for the decision.
"""

from __future__ import annotations

from dataclasses import replace

from tasklease.core.auditformat import detail_field
from tasklease.core.callers import about
from tasklease.core.kernel import Kernel, RequestContext
from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import Store
from tasklease.core.tokens import KIND_AGENT, Claims
from tasklease.core.validation import TokenRejected
from tasklease.rules.grants import holds_critical_scope

__all__ = ["assure", "live_denial"]


def live_denial(store: Store, claims: Claims) -> str | None:
    """Why the store says ``claims`` must be refused now, or ``None``.

    Reads every revocation entry the index could match (``RevocationIndex.keys``: token,
    agent, task, each lineage ancestor, and each agent of the delegation chain) and, for
    agent tokens, the agent record of the holder. Storage errors propagate: the caller
    fails closed.
    """
    index = RevocationIndex()
    index.apply(store.find_revocations(sorted(RevocationIndex.keys(claims))))
    level = index.match(claims)
    if level is not None:
        return f"token has been revoked (level {level}, live read)"
    if claims.kind == KIND_AGENT:
        agent = store.get_agent(claims.sub)
        if agent is None:
            return "no agent record for the token's subject (live read)"
        if agent.status != "active":
            return f"agent record is {agent.status} (live read)"
    return None


def assure(kernel: Kernel, claims: Claims, ctx: RequestContext, *, audit_denial: bool) -> bool:
    """High-assurance validation of ``claims`` if they carry a critical scope.

    Returns False (nothing done) for tokens without a critical scope, in their ``scope``
    claim or in a ``scope`` grant of their ``authorization_details``. Otherwise reads
    the live revocation state and the holder's record from the store, audits the
    outcome with ``high_assurance=true`` and raises :class:`TokenRejected` on refusal
    (audited here only when ``audit_denial``; the caller audits otherwise). A store
    failure propagates: the request fails closed.
    """
    if not holds_critical_scope(claims.scope, claims.details, kernel.config.critical_scopes):
        return False
    reason = live_denial(kernel.store, claims)
    ids = replace(about(claims), resource=ctx.path, request_id=ctx.request_id)
    if reason is not None:
        reason = f"{reason} high_assurance=true"
        if audit_denial:
            entry = replace(
                ids,
                event_type="token_validation_failed",
                outcome="denied",
                detail=f"{reason} jti={claims.jti}",
            )
            kernel.record(entry)
        raise TokenRejected(reason, "revoked")
    entry = replace(
        ids,
        event_type="token_validated",
        detail=f"high_assurance=true live revocation and agent record checked "
        f"jti={claims.jti} {detail_field('path', ctx.path)}",
    )
    kernel.record(entry)
    return True
