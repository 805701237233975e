"""The caller of an operation as the audit trail names it, and the agent-only gate."""

from __future__ import annotations

from typing import TypedDict

from tasklease.core.auditformat import AuditEntry, reason_text
from tasklease.core.delegation import principal_ref
from tasklease.core.errors import Forbidden
from tasklease.core.kernel import Kernel, RequestContext
from tasklease.core.tokens import KIND_AGENT, Claims

__all__ = [
    "Lineage",
    "about",
    "change_refused",
    "lineage",
    "refused",
    "require_agent",
]


class Lineage(TypedDict):
    app_id: str
    principal_ref: str
    chain_root: str


def lineage(claims: Claims) -> Lineage:
    """The lineage an audit entry about ``claims`` records (format v2): the app the
    credential descends from, the human principal (its pseudonym: the sanitizer would
    mask an e-mail address), the root agent of its delegation chain; each "" where the
    token has none."""
    app_id = next((a[4:] for a in claims.lineage if a.startswith("app:")), "")
    chain = claims.delegation_chain
    return Lineage(
        app_id=app_id,
        principal_ref=principal_ref(claims.principal) if claims.principal else "",
        chain_root=chain[0].agent if chain else "",
    )


def about(claims: Claims) -> AuditEntry:
    """The identifying fields of an audit entry about the holder of ``claims``."""
    return AuditEntry(
        "",
        agent_id=claims.sub,
        task_id=claims.task_id,
        orch_id=claims.orch_id,
        **lineage(claims),
    )


def refused(event_type: str, claims: Claims, ctx: RequestContext) -> AuditEntry:
    """The start of a denial entry about the holder of ``claims`` (its detail left empty)."""
    return AuditEntry(
        event_type,
        outcome="denied",
        agent_id=claims.sub,
        task_id=claims.task_id,
        orch_id=claims.orch_id,
        request_id=ctx.request_id,
        **lineage(claims),
    )


def change_refused(
    event_type: str, what: str, why: str, claims: Claims, ctx: RequestContext
) -> AuditEntry:
    """The event of an operator's refused change to ``what`` (an app, an attestor, a grant
    type; its ``denial_id`` added by the caller): why, and by whom."""
    return AuditEntry(
        event_type,
        outcome="denied",
        request_id=ctx.request_id,
        detail=f"{what} change refused: {reason_text(why)} by={claims.sub}",
    )


def require_agent(kernel: Kernel, claims: Claims, what: str, ctx: RequestContext) -> None:
    """Refuse (audited, as ``<what>_denied``) an admin or app token where only agents act.

    Raises:
        Forbidden: ``claims`` are not an agent token's.
    """
    if claims.kind != KIND_AGENT:
        raise kernel.deny(
            Forbidden(
                f"only agent tokens can {what}",
                hint="admin and app tokens are re-issued by authenticating again",
            ),
            AuditEntry(
                f"{what}_denied",
                outcome="denied",
                agent_id=claims.sub,
                request_id=ctx.request_id,
                detail=f"{claims.kind} token may not {what}",
            ),
        )
