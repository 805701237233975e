"""The caller of an operation as the audit trail names it, and the agent-only gate."""

from __future__ import annotations

from tasklease.core.auditformat import AuditEntry
from tasklease.core.errors import Forbidden
from tasklease.core.kernel import Kernel, RequestContext
from tasklease.core.tokens import KIND_AGENT, Claims

__all__ = ["about", "refused", "require_agent"]


def about(claims: Claims) -> AuditEntry:
    """The identifying fields of an audit entry about the holder of ``claims``."""
    return AuditEntry("", agent_id=claims.sub, task_id=claims.task_id, orch_id=claims.orch_id)


def refused(event_type: str, claims: Claims, ctx: RequestContext) -> AuditEntry:
    """The start of a denial entry about the holder of ``claims`` (its detail left empty)."""
    return AuditEntry(
        event_type,
        outcome="denied",
        agent_id=claims.sub,
        task_id=claims.task_id,
        orch_id=claims.orch_id,
        request_id=ctx.request_id,
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
