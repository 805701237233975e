"""HTTP routes of structured grants and issuance policy: operators' grant types, counting
a grant's calls for resource servers, and the policy set in force.

Thin adapters like the rest: parse, authenticate (``admin:keys:*`` for the operators'
routes; for a count the token itself, and the resource server's own credential when it
sends one: a certificate-bound token's calls are counted only for one, ``core.calls``),
call the Broker, translate. Building the routes of a broker also gives it its policy
source when ``policy_dir`` is set (``tasklease.policyfiles``:
``<policy_dir>/<tenant>/*.cedar``); the core reads no file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.calls import CallCount
from tasklease.core.errors import InvalidRequest
from tasklease.core.pending import Pending
from tasklease.core.policyrequest import SCHEMA
from tasklease.core.tokens import KIND_ADMIN, Claims
from tasklease.http import wire
from tasklease.http._handling import Authed, first_half, guard, json_response, read_body
from tasklease.http.lease_routes import presentation
from tasklease.policyfiles import PolicyDirectory
from tasklease.rules.grantuse import CALL_MEMBERS

__all__ = ["grant_routes"]

_ADMIN = frozenset({KIND_ADMIN})
_SCOPE = "admin:keys:*"


def grant_routes(
    broker: Broker, *, context: Callable[[Request], RequestContext], authed: Authed
) -> list[Route]:
    """The grant and policy routes of ``broker``'s tenant, each wrapped in ``guard``."""
    if broker.config.policy_dir and broker.policy_source is None:
        broker.use_policy_source(PolicyDirectory(broker.config.policy_dir, broker.tenant))
    types = broker.grant_types

    async def add(request: Request) -> Response:
        req = await read_body(request, wire.GrantTypeCreateRequest)
        record = await authed(
            request,
            _ADMIN,
            _SCOPE,
            lambda c, ctx: types.add(
                c,
                name=req.name,
                schema=req.json_schema,
                narrowing=req.narrowing,
                description=req.description,
                ctx=ctx,
            ),
        )
        return json_response(wire.grant_type_view(record), 201)

    async def list_(request: Request) -> Response:
        records = await authed(request, _ADMIN, _SCOPE, lambda _c, _ctx: types.list_types())
        views = [wire.grant_type_view(r) for r in records]
        return json_response(wire.GrantTypeList(grant_types=views, total=len(views)))

    async def show(request: Request) -> Response:
        name = request.path_params["name"]
        record = await authed(request, _ADMIN, _SCOPE, lambda _c, _ctx: types.get(name))
        return json_response(wire.grant_type_view(record))

    async def remove(request: Request) -> Response:
        name = request.path_params["name"]
        record = await authed(request, _ADMIN, _SCOPE, lambda c, ctx: types.remove(c, name, ctx))
        return json_response(wire.RemovedGrantType(name=record.name, removed=True))

    async def count(request: Request) -> Response:
        req = await read_body(request, wire.CallCountRequest)
        if not req.token:
            raise InvalidRequest("token field is required")
        call: dict[str, Any] = {
            name: getattr(req, name) for name in CALL_MEMBERS if getattr(req, name) is not None
        }
        ctx = context(request)
        token = req.token
        presented = presentation(req)
        header = request.headers.get("authorization")

        def prepare() -> Pending[tuple[Claims, CallCount]]:
            # The resource server's own credential, when it sends one (a verifier with
            # credentials does): a certificate-bound token is counted only for one.
            caller = None if header is None else broker.authenticate_introspector(header, ctx)
            return broker.prepare_count_call(
                token,
                kind=req.type,
                call=call,
                audience=req.audience,
                presented=presented,
                ctx=ctx,
                caller=caller,
            )

        # Checked on the loop (the token's live state is read there: run_reading), the
        # count group-committed and awaited with the forwarded proof's record.
        first = await first_half(prepare, store=broker.store)
        claims, counted = await broker.answer(first)
        return json_response(
            wire.CallCountResponse(
                counted=counted.counted,
                remaining=counted.remaining if counted.counted else None,
                max_calls=counted.max_calls if counted.counted else None,
                sub=claims.sub,
                jti=claims.jti,
            )
        )

    def view() -> wire.PolicyView:
        return wire.policy_view(broker.policy.current, broker.policy.failure, SCHEMA)

    async def policy(request: Request) -> Response:
        shown = await authed(request, _ADMIN, _SCOPE, lambda _c, _ctx: view())
        return json_response(shown)

    async def reload(request: Request) -> Response:
        def run(_c: object, _ctx: object) -> wire.PolicyView:
            broker.reload_policies()
            return view()

        return json_response(await authed(request, _ADMIN, _SCOPE, run))

    return [
        Route("/v1/admin/grant-types", guard(add), methods=["POST"]),
        Route("/v1/admin/grant-types", guard(list_), methods=["GET"]),
        Route("/v1/admin/grant-types/{name}", guard(show), methods=["GET"]),
        Route("/v1/admin/grant-types/{name}", guard(remove), methods=["DELETE"]),
        Route("/v1/token/calls", guard(count), methods=["POST"]),
        Route("/v1/admin/policy", guard(policy), methods=["GET"]),
        Route("/v1/admin/policy/reload", guard(reload), methods=["POST"]),
    ]
