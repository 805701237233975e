"""Tenants over HTTP: the routes one tenant serves, the tenant registry's routes, and the
ASGI app that serves every other tenant's routes under ``/t/<name>/``.

Each tenant's routes are the same route functions bound to its own
:class:`~tasklease.core.broker.Broker`, so a credential of one tenant meets another's
keys, issuer and store and is refused there like any unknown one: nothing here checks a
tenant. An unknown or removed tenant answers 404 like any unknown path, and so does
``default``: the default tenant is served at the root only (``Tenancy.broker``). A tenant
whose keys do not open in this process answers 503 ``service_unavailable`` with the
``denial_id`` of its audited refusal (``tasklease.tenancy``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.errors import TaskleaseError
from tasklease.core.tokens import KIND_ADMIN
from tasklease.http import wire
from tasklease.http._handling import authenticated, guard, json_response, read_body, request_context
from tasklease.http.admin_routes import admin_routes
from tasklease.http.agent_routes import agent_routes
from tasklease.http.attestation_routes import attestation_routes
from tasklease.http.audit_routes import audit_routes
from tasklease.http.console import console_routes
from tasklease.http.exchange_routes import exchange_routes
from tasklease.http.federation_routes import federation_routes
from tasklease.http.feed import RevocationHub, revocation_routes
from tasklease.http.grant_routes import grant_routes
from tasklease.http.health_routes import health_routes
from tasklease.http.inventory_routes import inventory_routes
from tasklease.http.lease_routes import lease_routes
from tasklease.http.oauth_routes import metadata_routes
from tasklease.http.offline_routes import offline_routes
from tasklease.http.problems import problem_response_parts
from tasklease.http.ratelimit import gate_refusals
from tasklease.http.token_routes import RequestURI, token_routes
from tasklease.tenancy import Tenancy

__all__ = ["TENANT_MOUNT", "TenantApps", "tenant_admin_routes", "tenant_routes"]

# Where the other tenants are mounted (core.tenants.TENANT_PATH_PREFIX + the name).
TENANT_MOUNT = "/t/{tenant}"
_ADMIN = frozenset({KIND_ADMIN})
_TENANTS = "admin:tenants:*"

Closer = Callable[[], Awaitable[None]]


def _request_id(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


def tenant_routes(
    broker: Broker, *, render_metrics: Callable[[], bytes], closers: list[Closer]
) -> list[BaseRoute]:
    """Every route of the API, served by ``broker`` for its tenant; what must be closed
    when the server stops is added to ``closers``."""
    context = request_context(RequestURI(broker.config))
    authed = authenticated(broker, context)
    hub = RevocationHub(broker)
    closers.append(hub.close)
    # The sign-ins spend the broker's sign-in limits (Broker.admit_sign_in): app sign-ins
    # at /v1/app/auth and as client credentials at /v1/oauth/token one; the admin
    # secret's and operators', through the API or the console, the other.
    # Each route holds its clients to their budget of audited refusals (RefusalGate).
    routes = [
        *lease_routes(broker, context=context, authed=authed),
        *health_routes(broker, authed=authed, render_metrics=render_metrics),
        *admin_routes(broker, context=context, authed=authed),
        *revocation_routes(broker, hub, guard=guard, context=context),
        *agent_routes(broker, guard=guard, context=context),
        *token_routes(broker, guard=guard, context=context),
        *federation_routes(broker, authed=authed),
        *attestation_routes(broker, authed=authed),
        *grant_routes(broker, context=context, authed=authed),
        *exchange_routes(broker, guard=guard, context=context),
        *metadata_routes(broker),
        *inventory_routes(broker, authed=authed),
        *audit_routes(broker, authed=authed),
        *offline_routes(broker, authed=authed),
        *console_routes(broker, context=context),
    ]
    return gate_refusals(broker, routes)


def tenant_admin_routes(
    tenancy: Tenancy, *, context: Callable[[Request], RequestContext]
) -> list[BaseRoute]:
    """The tenant registry's routes, served by the default tenant only."""
    broker = tenancy.default
    authed = authenticated(broker, context)
    issuer = broker.config.issuer

    async def create_tenant(request: Request) -> Response:
        req = await read_body(request, wire.TenantCreateRequest)
        record, operator, secret = await authed(
            request,
            _ADMIN,
            _TENANTS,
            lambda c, ctx: tenancy.create(c, name=req.name, trust_domain=req.trust_domain, ctx=ctx),
        )
        return json_response(wire.tenant_with_admin(record, issuer, operator.name, secret), 201)

    async def list_tenants(request: Request) -> Response:
        records = await authed(request, _ADMIN, _TENANTS, lambda _c, _ctx: broker.list_tenants())
        views = [wire.tenant_view(record, issuer) for record in records]
        return json_response(wire.TenantList(tenants=views, total=len(views)))

    async def remove_tenant(request: Request) -> Response:
        name = request.path_params["name"]
        record = await authed(
            request, _ADMIN, _TENANTS, lambda c, ctx: tenancy.remove(c, name, ctx)
        )
        return json_response(wire.tenant_view(record, issuer))

    routes = [
        Route("/v1/admin/tenants", guard(create_tenant), methods=["POST"]),
        Route("/v1/admin/tenants", guard(list_tenants), methods=["GET"]),
        Route("/v1/admin/tenants/{name}", guard(remove_tenant), methods=["DELETE"]),
    ]
    return gate_refusals(broker, routes)


class TenantApps:
    """The ASGI app mounted at :data:`TENANT_MOUNT`: each tenant's routes, made on first use."""

    def __init__(
        self, tenancy: Tenancy, *, render_metrics: Callable[[], bytes], closers: list[Closer]
    ) -> None:
        self._tenancy = tenancy
        self._render_metrics = render_metrics
        self._closers = closers
        self._routers: dict[str, tuple[Broker, Router]] = {}
        # Reading the registry is a network round trip on PostgreSQL: off the event loop.
        self._local = tenancy.default.store.local_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"]["tenant"]
        lookup = functools.partial(self._tenancy.broker, request_id=_request_id(scope))
        try:
            broker = lookup(name) if self._local else await run_in_threadpool(lookup, name)
        except TaskleaseError as exc:  # a tenant not served here (its keys): 503
            self._routers.pop(name, None)
            request = Request(scope, receive)
            status, body, headers = problem_response_parts(
                exc, instance=request.url.path, request_id=_request_id(scope)
            )
            problem = Response(body, status, headers=headers, media_type="application/problem+json")
            await problem(scope, receive, send)
            return
        if broker is None:
            self._routers.pop(name, None)
            raise HTTPException(404)
        known = self._routers.get(name)
        if known is None or known[0] is not broker:
            routes = tenant_routes(
                broker, render_metrics=self._render_metrics, closers=self._closers
            )
            known = (broker, Router(routes=routes, redirect_slashes=False))
            self._routers[name] = known
        await known[1](scope, receive, send)
