"""``POST /v1/audit/offline`` over HTTP: late reports of offline derivations and uses
(:class:`~tasklease.core.offlineaudit.OfflineAudit`; docs/audit.md, "Reported late")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.kernel import RequestContext
from tasklease.core.offlineaudit import DerivationReport, ReportOutcome, UseReport
from tasklease.core.offlinechain import KIND_OFFLINE
from tasklease.core.tokens import KIND_AGENT, KIND_APP, Claims
from tasklease.http import wire
from tasklease.http._handling import Authed, guard, json_response, read_body

__all__ = ["offline_routes"]

# Agents (with their token, or an offline chain they hold) and resource servers' apps.
_REPORTERS = frozenset({KIND_AGENT, KIND_APP, KIND_OFFLINE})


def offline_routes(broker: Broker, *, authed: Authed) -> list[Route]:
    """The offline report route, wrapped in the problem ``guard``."""
    audit = broker.offline_audit

    async def report(request: Request) -> Response:
        req = await read_body(request, wire.OfflineReportRequest)
        derivations = [DerivationReport(d.chain) for d in req.derivations]
        uses = [UseReport(u.chain, u.occurred_at, u.count) for u in req.uses]

        def op(caller: Claims, ctx: RequestContext) -> ReportOutcome:
            return audit.report(caller, derivations=derivations, uses=uses, ctx=ctx)

        outcome = await authed(request, _REPORTERS, None, op)
        return json_response(wire.offline_report_response(outcome))

    return [Route("/v1/audit/offline", guard(report), methods=["POST"])]
