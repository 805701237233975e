"""HTTP routes that describe the broker: health, readiness, metrics, JWKS, OpenAPI.

Health and readiness answer from checks that run on threads of their own: the routes
never wait on storage longer than the checks' bound (docs/operations.md, Health).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.errors import Unavailable
from tasklease.core.status import public_health
from tasklease.core.tokens import KIND_ADMIN
from tasklease.http import wire
from tasklease.http._handling import Authed, guard, http_error, json_response
from tasklease.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tasklease.http.openapi import openapi_json

__all__ = ["OBSERVER_SCOPE", "health_routes"]

_ADMIN = frozenset({KIND_ADMIN})
# What an operator's token must hold to read the metrics on this listener and the health
# report's details: the auditor role's one scope (admin and operator roles hold it too).
OBSERVER_SCOPE = "admin:audit:*"


def health_routes(
    broker: Broker, *, authed: Authed, render_metrics: Callable[[], bytes]
) -> list[Route]:
    """The health, metrics and discovery routes, each wrapped in the problem ``guard``.

    ``render_metrics`` makes the text ``/v1/metrics`` answers with.
    """
    cfg = broker.config
    readiness = broker.readiness

    async def checked(*, wait: bool) -> None:
        """Start the health checks that are due; with ``wait``, give them up to the bound
        to finish (on the loop: no thread is held while storage is slow)."""
        pending = readiness.refresh()
        if wait and not pending.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(pending)), readiness.bound
                )

    async def health(request: Request) -> Response:
        # Anyone learns whether the broker is alive and serving; its version, key id and
        # counts only an operator's token with the auditor role's scope (public_health).
        detailed = False
        if request.headers.get("authorization") is not None:
            # While the revocation state is not confirmed current no token can be checked
            # (Unavailable): the anonymous answer still says degraded, and why.
            with contextlib.suppress(Unavailable):
                await authed(request, _ADMIN, OBSERVER_SCOPE, lambda _c, _ctx: None)
                detailed = True
        # From the last check, made every second in the background: only when nobody has
        # checked lately (no background task, or a long pause) wait for a fresh one.
        await checked(wait=readiness.stale())
        report = readiness.health()
        return json_response(report if detailed else public_health(report))

    async def health_live(request: Request) -> Response:
        return json_response(wire.LiveResponse(status="ok"))

    async def health_ready(request: Request) -> Response:
        await checked(wait=True)
        verdict = readiness.ready()
        if not verdict.ready:
            raise Unavailable(f"not ready: {verdict.reason}", retry_after=1)
        return json_response(wire.ReadyResponse(status="ready"))

    async def metrics(request: Request) -> Response:
        # The metrics have a listener of their own (metrics_listen); here, by the
        # operator's choice only, to operators' tokens: otherwise as unknown as any path.
        if cfg.metrics_public != "token":
            return await http_error(request, HTTPException(404))
        await authed(request, _ADMIN, OBSERVER_SCOPE, lambda _c, _ctx: None)
        text = await run_in_threadpool(render_metrics)
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    async def jwks(request: Request) -> Response:
        resp = json_response(broker.keyring.jwks())
        resp.headers["cache-control"] = "public, max-age=60"
        return resp

    async def openapi(request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")

    return [
        Route("/v1/health", guard(health), methods=["GET"]),
        Route("/v1/health/live", guard(health_live), methods=["GET"]),
        Route("/v1/health/ready", guard(health_ready), methods=["GET"]),
        Route("/v1/metrics", guard(metrics), methods=["GET"]),
        Route("/.well-known/jwks.json", guard(jwks), methods=["GET"]),
        Route("/v1/openapi.json", guard(openapi), methods=["GET"]),
    ]
