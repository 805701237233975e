"""HTTP routes of what operators see (``core.inventory``): agents, launch tokens,
revocation entries, delegation trees and tasks. Read-only; ``admin:audit:*`` (every
operator role, the auditor's too)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.errors import InvalidRequest
from tasklease.core.tokens import KIND_ADMIN
from tasklease.http import wire
from tasklease.http._handling import Authed, guard, json_response

__all__ = ["READ_SCOPE", "inventory_routes", "page_limit"]

READ_SCOPE = "admin:audit:*"
_ADMIN = frozenset({KIND_ADMIN})


def page_limit(value: str | None) -> int | None:
    """The ``limit`` query parameter: None when absent; 400 when not an integer."""
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest("limit must be an integer") from None
    return max(-1, min(number, 10_000))


def _text(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


def inventory_routes(broker: Broker, *, authed: Authed) -> list[Route]:
    """The routes, each wrapped in the problem ``guard``."""
    inventory = broker.inventory

    async def list_agents(request: Request) -> Response:
        limit = page_limit(request.query_params.get("limit"))
        page = await authed(
            request,
            _ADMIN,
            READ_SCOPE,
            lambda _c, _ctx: inventory.agents(
                app_id=_text(request, "app_id"),
                task_id=_text(request, "task_id"),
                principal=_text(request, "principal"),
                state=_text(request, "state"),
                cursor=_text(request, "cursor"),
                limit=limit,
            ),
        )
        return json_response(wire.agent_page(page))

    async def list_launch_tokens(request: Request) -> Response:
        limit = page_limit(request.query_params.get("limit"))
        page = await authed(
            request,
            _ADMIN,
            READ_SCOPE,
            lambda _c, _ctx: inventory.launch_tokens(
                app_id=_text(request, "app_id"),
                principal=_text(request, "principal"),
                cursor=_text(request, "cursor"),
                limit=limit,
            ),
        )
        return json_response(wire.launch_token_page(page))

    async def list_revocations(request: Request) -> Response:
        limit = page_limit(request.query_params.get("limit"))
        page = await authed(
            request,
            _ADMIN,
            READ_SCOPE,
            lambda _c, _ctx: inventory.revocations(
                level=_text(request, "level"), cursor=_text(request, "cursor"), limit=limit
            ),
        )
        return json_response(wire.revocation_page(page))

    async def delegations(request: Request) -> Response:
        jti = request.path_params["jti"]
        view = await authed(
            request, _ADMIN, READ_SCOPE, lambda _c, _ctx: inventory.delegations(jti)
        )
        return json_response(wire.delegation_tree(view))

    async def task(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        view = await authed(request, _ADMIN, READ_SCOPE, lambda _c, _ctx: inventory.task(task_id))
        return json_response(wire.task_detail(view))

    return [
        Route("/v1/admin/agents", guard(list_agents), methods=["GET"]),
        Route("/v1/admin/launch-tokens", guard(list_launch_tokens), methods=["GET"]),
        Route("/v1/admin/revocations", guard(list_revocations), methods=["GET"]),
        Route("/v1/admin/delegations/{jti}", guard(delegations), methods=["GET"]),
        Route("/v1/admin/tasks/{task_id}", guard(task), methods=["GET"]),
    ]
