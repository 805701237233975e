"""HTTP routes for operators and apps: sign-in, apps, launch tokens, operators, signing
keys, revocation and the audit log.

Thin adapters like the rest of ``tasklease.http``: parse, authenticate the caller for the
route's scope, call one :class:`~tasklease.core.broker.Broker` method in the thread pool,
translate. The Broker checks and audits; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec import UNSET
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext, expires_at_text
from tasklease.core.errors import InvalidRequest
from tasklease.core.records import AuditQuery, audit_query_time
from tasklease.core.tokens import KIND_ADMIN, KIND_APP, OPERATORS_SCOPE
from tasklease.http import wire
from tasklease.http._handling import (
    Authed,
    guard,
    json_response,
    one_of,
    prepared,
    read_body,
)
from tasklease.http.ratelimit import limit_sign_in

__all__ = ["APPS_SCOPE", "REVOKE_SCOPE", "admin_routes", "parse_int"]

_ADMIN = frozenset({KIND_ADMIN})
_APP = frozenset({KIND_APP})
# The scopes of the routes the console mirrors (http.console): written here once.
APPS_SCOPE = "admin:launch-tokens:*"  # the app registry, and the admin's launch tokens
REVOKE_SCOPE = "admin:revoke:*"


def _parse_time(value: str | None, name: str) -> float | None:
    try:
        return audit_query_time(value, name)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _outcome(value: str | None) -> str | None:
    if not value:
        return None
    if value not in ("success", "denied"):
        raise InvalidRequest("outcome must be success or denied")
    return value


def parse_int(value: str | None, name: str, default: int) -> int:
    """A query parameter as an integer within what every store and JSON reader can hold
    exactly (2**53 either way); ``default`` when absent. Raises ``InvalidRequest``."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if not -(2**53) <= number <= 2**53:
        raise InvalidRequest(f"{name} is out of range")
    return number


def admin_routes(
    broker: Broker,
    *,
    context: Callable[[Request], RequestContext],
    authed: Authed,
) -> list[Route]:
    """The administration routes, each wrapped in the problem ``guard``.

    The sign-ins spend the broker's sign-in limits (``limit_sign_in``): the admin
    secret's and operators' one (the console's sign-ins too), app sign-ins the other
    (the token endpoint's client credentials too).
    """
    # Revocation and launch tokens: checked on the loop, the commit awaited.
    written = prepared(broker, context)

    async def revoke(request: Request) -> Response:
        req = await read_body(request, wire.RevokeRequest)
        count = await written(
            request,
            _ADMIN,
            REVOKE_SCOPE,
            lambda c, ctx: broker.prepare_revoke(c, level=req.level, target=req.target, ctx=ctx),
        )
        return json_response(
            wire.RevokeResponse(
                revoked=True, level=req.level or "", target=req.target or "", count=count
            )
        )

    async def audit_events(request: Request) -> Response:
        q = request.query_params
        limit_ = parse_int(q.get("limit"), "limit", 100)
        offset = max(0, parse_int(q.get("offset"), "offset", 0))
        limit_ = 100 if limit_ <= 0 else min(limit_, 1000)
        query = AuditQuery(
            agent_id=q.get("agent_id") or None,
            task_id=q.get("task_id") or None,
            event_type=q.get("event_type") or None,
            outcome=_outcome(q.get("outcome")),
            principal_ref=q.get("principal_ref") or None,
            since=_parse_time(q.get("since"), "since"),
            until=_parse_time(q.get("until"), "until"),
            limit=limit_,
            offset=offset,
        )
        events, total = await authed(
            request, _ADMIN, "admin:audit:*", lambda _c, _ctx: broker.audit_events(query)
        )
        return json_response(
            wire.AuditEventPage(
                events=[wire.audit_event(e) for e in events],
                total=total,
                offset=offset,
                limit=limit_,
            )
        )

    async def admin_auth(request: Request) -> Response:
        await limit_sign_in(broker, "admin", request)
        req = await read_body(request, wire.AdminAuthRequest)
        if req.client_id or req.client_secret:
            raise InvalidRequest(
                'Admin auth format changed. Use {"secret": "..."} '
                "instead of client_id/client_secret"
            )
        ctx = context(request)
        issued = await run_in_threadpool(lambda: broker.admin_auth(req.secret, ctx))
        return json_response(
            wire.AdminAuthResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type="Bearer",  # noqa: S106 - a token type, not a secret
            )
        )

    async def operator_auth(request: Request) -> Response:
        # One limit with the admin secret's route: alternating them buys no attempts.
        await limit_sign_in(broker, "admin", request)
        req = await read_body(request, wire.OperatorAuthRequest)
        ctx = context(request)
        issued, operator = await run_in_threadpool(
            lambda: broker.operator_auth(
                name=req.name, secret=req.secret, nonce=req.nonce, signature=req.signature, ctx=ctx
            )
        )
        return json_response(
            wire.OperatorAuthResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type="Bearer",  # noqa: S106 - a token type, not a secret
                role=operator.role,
                scopes=list(issued.claims.scope),
            )
        )

    operators_scope = OPERATORS_SCOPE

    async def create_operator(request: Request) -> Response:
        req = await read_body(request, wire.OperatorCreateRequest)
        operator, secret = await authed(
            request,
            _ADMIN,
            operators_scope,
            lambda c, ctx: broker.add_operator(
                c, name=req.name, role=req.role, public_key=req.public_key, ctx=ctx
            ),
        )
        return json_response(wire.operator_with_secret(operator, secret), 201)

    async def list_operators(request: Request) -> Response:
        operators = await authed(
            request, _ADMIN, operators_scope, lambda _c, _ctx: broker.list_operators()
        )
        return json_response(
            wire.OperatorList(
                operators=[wire.operator_view(o) for o in operators], total=len(operators)
            )
        )

    async def remove_operator(request: Request) -> Response:
        name = request.path_params["name"]
        operator = await authed(
            request, _ADMIN, operators_scope, lambda c, ctx: broker.remove_operator(c, name, ctx)
        )
        return json_response(wire.removed_operator(operator))

    async def rotate_operator(request: Request) -> Response:
        name = request.path_params["name"]
        req = await read_body(request, wire.OperatorRotateRequest)
        operator, secret = await authed(
            request,
            _ADMIN,
            operators_scope,
            lambda c, ctx: broker.rotate_operator(c, name, public_key=req.public_key, ctx=ctx),
        )
        return json_response(wire.operator_with_secret(operator, secret))

    async def app_auth(request: Request) -> Response:
        await limit_sign_in(broker, "app", request)
        req = await read_body(request, wire.AppAuthRequest)
        ctx = context(request)
        issued = await run_in_threadpool(
            lambda: broker.app_auth(req.client_id, req.client_secret, ctx)
        )
        return json_response(
            wire.AppAuthResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type="Bearer",  # noqa: S106 - a token type, not a secret
                scopes=list(issued.claims.scope),
            )
        )

    async def launch_tokens(request: Request, kinds: frozenset[str], scope: str) -> Response:
        req = await read_body(request, wire.LaunchTokenRequest)
        token, record = await written(
            request,
            kinds,
            scope,
            lambda c, ctx: broker.prepare_launch_token(
                c,
                agent_name=req.agent_name,
                allowed_scope=req.allowed_scope,
                max_ttl=req.max_ttl,
                single_use=req.single_use,
                ttl=req.ttl,
                ctx=ctx,
                resource=one_of(req.resource, req.audience),
                principal=req.principal,
                max_uses=req.max_uses,
                allow_resume=req.allow_resume,
                authorization_details=req.authorization_details,
                agent_key=req.agent_key,
            ),
        )
        policy = wire.LaunchTokenPolicy(
            allowed_scope=list(record.allowed_scope),
            max_ttl=record.max_ttl,
            single_use=record.single_use,
            allow_resume=record.allow_resume,
            authorization_details=wire.details_out(record.authorization_details),
            agent_key=record.agent_key or UNSET,
        )
        return json_response(
            wire.LaunchTokenResponse(
                launch_token=token,
                expires_at=expires_at_text(record),
                max_uses=record.max_uses,
                uses_left=record.uses_left,
                policy=policy,
            ),
            201,
        )

    async def admin_launch_tokens(request: Request) -> Response:
        return await launch_tokens(request, _ADMIN, APPS_SCOPE)

    async def app_launch_tokens(request: Request) -> Response:
        return await launch_tokens(request, _APP, "app:launch-tokens:*")

    async def create_app_(request: Request) -> Response:
        req = await read_body(request, wire.AppCreateRequest)
        app, secret = await authed(
            request,
            _ADMIN,
            APPS_SCOPE,
            lambda c, ctx: broker.register_app(
                c,
                name=req.name,
                scopes=req.scopes,
                token_ttl=req.token_ttl,
                ctx=ctx,
                public_key=req.public_key,
                authorization_details=req.authorization_details,
            ),
        )
        return json_response(wire.app_with_secret(app, secret), 201)

    async def list_apps(request: Request) -> Response:
        apps = await authed(request, _ADMIN, APPS_SCOPE, lambda _c, _ctx: broker.list_apps())
        return json_response(wire.AppList(apps=[wire.app_view(a) for a in apps], total=len(apps)))

    async def get_app(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        app = await authed(
            request, _ADMIN, APPS_SCOPE, lambda _c, _ctx: broker.get_app(app_id), reads=True
        )
        return json_response(wire.app_view(app))

    async def update_app(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        req = await read_body(request, wire.AppUpdateRequest)
        app = await authed(
            request,
            _ADMIN,
            APPS_SCOPE,
            lambda c, ctx: broker.update_app(
                c,
                app_id,
                scopes=req.scopes,
                token_ttl=req.token_ttl,
                ctx=ctx,
                public_key=req.public_key,
                authorization_details=req.authorization_details,
            ),
        )
        return json_response(wire.app_view(app))

    async def rotate_app_secret(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        app, secret = await authed(
            request,
            _ADMIN,
            APPS_SCOPE,
            lambda c, ctx: broker.rotate_app_secret(c, app_id, ctx),
        )
        return json_response(wire.app_with_secret(app, secret))

    async def delete_app(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        app = await authed(
            request, _ADMIN, APPS_SCOPE, lambda c, ctx: broker.deregister_app(c, app_id, ctx)
        )
        return json_response(wire.deregistered_app(app))

    async def rotate_keys(request: Request) -> Response:
        # The admin role's (and the built-in admin's); an operator may revoke but not rotate.
        new_kid, previous_kid = await authed(
            request, _ADMIN, "admin:keys:*", broker.rotate_signing_key
        )
        return json_response(
            wire.KeyRotationResponse(
                kid=new_kid, previous_kid=previous_kid, kids=broker.keyring.kids()
            )
        )

    async def retire_key(request: Request) -> Response:
        kid = request.path_params["kid"]
        kept = await authed(
            request,
            _ADMIN,
            "admin:keys:*",
            lambda c, ctx: broker.retire_signing_key(c, kid, ctx),
        )
        return json_response(wire.KeyRetirementResponse(kid=kid, kids=list(kept)))

    return [
        Route("/v1/revoke", guard(revoke), methods=["POST"]),
        Route("/v1/audit/events", guard(audit_events), methods=["GET"]),
        Route("/v1/admin/auth", guard(admin_auth), methods=["POST"]),
        Route("/v1/admin/launch-tokens", guard(admin_launch_tokens), methods=["POST"]),
        Route("/v1/app/launch-tokens", guard(app_launch_tokens), methods=["POST"]),
        Route("/v1/admin/apps", guard(create_app_), methods=["POST"]),
        Route("/v1/admin/apps", guard(list_apps), methods=["GET"]),
        Route("/v1/admin/apps/{app_id}", guard(get_app), methods=["GET"]),
        Route("/v1/admin/apps/{app_id}", guard(update_app), methods=["PUT"]),
        Route("/v1/admin/apps/{app_id}", guard(delete_app), methods=["DELETE"]),
        Route("/v1/admin/apps/{app_id}/rotate-secret", guard(rotate_app_secret), methods=["POST"]),
        Route("/v1/app/auth", guard(app_auth), methods=["POST"]),
        Route("/v1/admin/keys/rotate", guard(rotate_keys), methods=["POST"]),
        Route("/v1/admin/keys/{kid}/retire", guard(retire_key), methods=["POST"]),
        Route("/v1/operator/auth", guard(operator_auth), methods=["POST"]),
        Route("/v1/admin/operators", guard(create_operator), methods=["POST"]),
        Route("/v1/admin/operators", guard(list_operators), methods=["GET"]),
        Route("/v1/admin/operators/{name}", guard(remove_operator), methods=["DELETE"]),
        Route("/v1/admin/operators/{name}/rotate", guard(rotate_operator), methods=["POST"]),
    ]
