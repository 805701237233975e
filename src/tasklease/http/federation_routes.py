"""HTTP routes for federation: this broker's trust bundle, and the federated trust domains.

``GET /v1/federation/bundle`` is the bundle endpoint of SPIFFE Federation's ``https_web``
profile: public, no client authentication, ``application/json``. The administration routes
are thin adapters like the rest: parse, authenticate for ``admin:keys:*``, call
:attr:`Broker.federation <tasklease.core.broker.Broker.federation>`, translate. Declaring
an endpoint fetches its bundle before answering, so the answer says whether it worked.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.records import FederationRecord
from tasklease.core.tokens import KIND_ADMIN
from tasklease.federation import refresh_domain
from tasklease.http import wire
from tasklease.http._handling import Authed, guard, json_response, read_body

__all__ = ["federation_routes"]

_ADMIN = frozenset({KIND_ADMIN})
_SCOPE = "admin:keys:*"
# The bundle is polled on its refresh hint; a cache in between may keep it that long at
# most, and never longer than a minute (a rotation must reach peers well within a hint).
_MAX_CACHE = 60


def federation_routes(broker: Broker, *, authed: Authed) -> list[Route]:
    """The federation routes of ``broker``'s tenant, each wrapped in the problem ``guard``."""
    federation = broker.federation
    local = broker.store.local_reads
    max_age = min(broker.config.federation_refresh_hint, _MAX_CACHE)

    def fields_of(record: FederationRecord) -> dict[str, Any]:
        heard = broker.store.feed_heard(record.trust_domain) if record.revocation_feed else None
        return wire.federation_view(record, federation.bundle(record), broker.clock.now(), heard)

    def view(record: FederationRecord) -> wire.Federation:
        return wire.Federation(**fields_of(record))

    async def bundle(request: Request) -> Response:
        document = broker.trust_bundle() if local else await run_in_threadpool(broker.trust_bundle)
        return Response(
            document,
            media_type="application/json",
            headers={"cache-control": f"public, max-age={max_age}"},
        )

    async def add(request: Request) -> Response:
        req = await read_body(request, wire.FederationCreateRequest)
        record, replaced = await authed(
            request,
            _ADMIN,
            _SCOPE,
            lambda c, ctx: federation.add(
                c,
                trust_domain=req.trust_domain,
                bundle_endpoint_url=req.bundle_endpoint_url,
                bundle=req.bundle,
                ca_pem=req.ca_pem,
                max_bundle_age=req.max_bundle_age,
                scope_map=req.scope_map,
                scope_ceiling=req.scope_ceiling,
                max_ttl=req.max_ttl,
                revocation_feed=req.revocation_feed,
                feed_credentials_file=req.feed_credentials_file,
                ctx=ctx,
            ),
        )

        def fetched() -> wire.FederationAdded:
            current = record
            if not record.static:
                refresh_domain(broker, record)  # the outcome lands on the stored record
                current = federation.get(record.trust_domain)
            return wire.FederationAdded(**fields_of(current), replaced=replaced)

        return json_response(await run_in_threadpool(fetched), 201)

    async def list_(request: Request) -> Response:
        records = await authed(
            request, _ADMIN, _SCOPE, lambda _c, _ctx: federation.list_federations()
        )
        views = await run_in_threadpool(lambda: [view(record) for record in records])
        return json_response(wire.FederationList(federations=views, total=len(views)))

    async def show(request: Request) -> Response:
        domain = request.path_params["trust_domain"]
        record = await authed(request, _ADMIN, _SCOPE, lambda _c, _ctx: federation.get(domain))
        return json_response(await run_in_threadpool(view, record))

    async def remove(request: Request) -> Response:
        domain = request.path_params["trust_domain"]
        record = await authed(
            request, _ADMIN, _SCOPE, lambda c, ctx: federation.remove(c, domain, ctx)
        )
        return json_response(wire.RemovedFederation(trust_domain=record.trust_domain, removed=True))

    return [
        Route("/v1/federation/bundle", guard(bundle), methods=["GET"]),
        Route("/v1/admin/federations", guard(add), methods=["POST"]),
        Route("/v1/admin/federations", guard(list_), methods=["GET"]),
        Route("/v1/admin/federations/{trust_domain}", guard(show), methods=["GET"]),
        Route("/v1/admin/federations/{trust_domain}", guard(remove), methods=["DELETE"]),
    ]
