"""HTTP routes for workload attestation: the attestors operators configure, and their test.

Thin adapters like the rest: parse, authenticate for ``admin:keys:*``, call
:attr:`Broker.attestation <tasklease.core.broker.Broker.attestation>`, translate. Building
the routes of a broker also gives its attestation service the HTTPS key fetcher
(``tasklease.attestation``): a broker that serves HTTP fetches issuers' keys; the core
itself does no I/O. Registration with evidence is ``POST /v1/register`` (lease routes).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.attestation import HttpKeyFetcher
from tasklease.core.broker import Broker
from tasklease.core.tokens import KIND_ADMIN
from tasklease.http import wire
from tasklease.http._handling import Authed, guard, json_response, read_body

__all__ = ["attestation_routes"]

_ADMIN = frozenset({KIND_ADMIN})
_SCOPE = "admin:keys:*"


def attestation_routes(broker: Broker, *, authed: Authed) -> list[Route]:
    """The attestation routes of ``broker``'s tenant, each wrapped in the problem ``guard``."""
    attestation = broker.attestation
    if attestation.fetcher is None:
        attestation.use_fetcher(HttpKeyFetcher())

    async def add(request: Request) -> Response:
        req = await read_body(request, wire.AttestorCreateRequest)
        record, replaced = await authed(
            request,
            _ADMIN,
            _SCOPE,
            lambda c, ctx: attestation.add(
                c,
                name=req.name,
                type=req.type,
                settings=req.settings,
                policy=req.policy,
                app_id=req.app_id,
                ctx=ctx,
            ),
        )
        return json_response(
            wire.AttestorAdded(**wire.attestor_view(record), replaced=replaced), 201
        )

    async def list_(request: Request) -> Response:
        records = await authed(
            request, _ADMIN, _SCOPE, lambda _c, _ctx: attestation.list_attestors()
        )
        views = [wire.Attestor(**wire.attestor_view(record)) for record in records]
        return json_response(wire.AttestorList(attestors=views, total=len(views)))

    async def show(request: Request) -> Response:
        name = request.path_params["name"]
        record = await authed(request, _ADMIN, _SCOPE, lambda _c, _ctx: attestation.get(name))
        return json_response(wire.Attestor(**wire.attestor_view(record)))

    async def remove(request: Request) -> Response:
        name = request.path_params["name"]
        record = await authed(
            request, _ADMIN, _SCOPE, lambda c, ctx: attestation.remove(c, name, ctx)
        )
        return json_response(wire.RemovedAttestor(name=record.name, removed=True))

    async def test(request: Request) -> Response:
        name = request.path_params["name"]
        req = await read_body(request, wire.AttestorTestRequest)
        result, record = await authed(
            request,
            _ADMIN,
            _SCOPE,
            lambda c, ctx: (attestation.test(c, name, req.evidence, ctx), attestation.get(name)),
        )
        principal = f"app:{record.app_id}" if record.app_id else f"attestor:{record.name}"
        return json_response(wire.attestor_test_result(result, principal))

    return [
        Route("/v1/admin/attestors", guard(add), methods=["POST"]),
        Route("/v1/admin/attestors", guard(list_), methods=["GET"]),
        Route("/v1/admin/attestors/{name}", guard(show), methods=["GET"]),
        Route("/v1/admin/attestors/{name}", guard(remove), methods=["DELETE"]),
        Route("/v1/admin/attestors/{name}/test", guard(test), methods=["POST"]),
    ]
