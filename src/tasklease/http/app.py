"""The HTTP adapter: parse, call the Broker, translate. No decisions are made here.

Blocking operations (anything that commits, and argon2 checks) run in the thread pool;
token validation is pure CPU and runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.binding import cert_thumbprint_from_pem
from tasklease.core.broker import (
    ALL_KINDS,
    Broker,
    PendingRegistration,
    RequestContext,
    expires_at_text,
)
from tasklease.core.errors import (
    InvalidRequest,
    InvalidTarget,
    RateLimited,
    TaskleaseError,
    Unavailable,
)
from tasklease.core.introspection import is_reference_token
from tasklease.core.readiness import INTERVAL, Readiness
from tasklease.core.status import public_health
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import KIND_ADMIN, KIND_AGENT, KIND_APP, Claims
from tasklease.core.validation import TokenRejected
from tasklease.http import wire
from tasklease.http.agent_routes import agent_routes
from tasklease.http.feed import RevocationHub, revocation_routes
from tasklease.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tasklease.http.middleware import (
    EnvelopeMiddleware,
    TrustedProxyMiddleware,
    json_nesting_error,
)
from tasklease.http.openapi import openapi_json
from tasklease.http.problems import problem_body, problem_response_parts
from tasklease.http.ratelimit import RateLimiter
from tasklease.http.tls import peer_cert_thumbprint
from tasklease.http.token_routes import RequestURI, token_routes
from tasklease.rules.binding import BindingError, Presentation

__all__ = ["create_app"]

_log = logging.getLogger("tasklease.http")
_encoder = msgspec.json.Encoder()
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

ADMIN = frozenset({KIND_ADMIN})
APP = frozenset({KIND_APP})
AGENT = frozenset({KIND_AGENT})
# What an operator's token must hold to read the metrics on this listener and the health
# report's details: the auditor role's one scope (admin and operator roles hold it too).
OBSERVER_SCOPE = "admin:audit:*"
_INVALID = msgspec.json.encode(wire.InvalidToken()) + b"\n"
# Revocations committed by other workers or replicas sharing the store are picked up by
# a primary-key range read this often (~20 us each): the bound on propagation between
# processes. See docs/decisions.md, "Revocation propagation between workers".
REVOCATION_POLL_INTERVAL = 0.025
# How often a process looks for signing keys another process added (`keys rotate`).
KEY_REFRESH_INTERVAL = 1.0


def _json(data: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(data) + b"\n", status, media_type="application/json")


def _request_id(request: Request) -> str:
    request_id: str = request.scope.get("state", {}).get("request_id", "")
    return request_id


def _context(uri: RequestURI) -> Callable[[Request], RequestContext]:
    """Build each request's :class:`RequestContext`; ``uri`` gives the expected DPoP htu."""

    def context(request: Request) -> RequestContext:
        client = request.client  # the TCP peer, or what a trusted proxy says it saw
        # Proof-of-possession material: the certificate from the TLS connection only;
        # several DPoP headers join into one that fails (RFC 9449 section 4.3 point 1).
        dpop = ",".join(request.headers.getlist("dpop"))
        return RequestContext(
            request_id=_request_id(request),
            remote=client.host if client else "",
            path=request.url.path,
            cert_thumbprint=peer_cert_thumbprint(request.scope),
            dpop=dpop,
            method=request.method,
            url=uri.htu(request, dpop),
        )

    return context


async def _body(request: Request, kind: type[T]) -> T:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("malformed JSON body: the body is empty")
    nested = json_nesting_error(raw)  # the envelope refused these already; stay safe alone
    if nested is not None:
        raise InvalidRequest(nested)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest("malformed JSON body") from None


def _one_of(resource: T | None, audience: T | None) -> T | None:
    """``resource`` and its alias ``audience``: either, or both if they agree (RFC 8707)."""
    if resource is not None and audience is not None and resource != audience:
        raise InvalidTarget("resource and audience disagree: send one of them")
    return resource if resource is not None else audience


def _token_type(claims: Claims) -> str:
    """``DPoP`` for a DPoP-bound token (RFC 9449 section 5), else ``Bearer``."""
    cnf = claims.raw.get("cnf")
    return "DPoP" if isinstance(cnf, dict) and "jkt" in cnf else "Bearer"


def _presentation(req: wire.ValidateRequest) -> Presentation:
    """What a resource server says its own request presented (for bound tokens)."""
    thumbprint = req.client_cert_thumbprint or ""
    if req.client_cert:
        try:
            thumbprint = cert_thumbprint_from_pem(req.client_cert)
        except BindingError as exc:
            raise InvalidRequest("client_cert must be one PEM certificate") from exc
    return Presentation(
        scheme="DPoP" if req.dpop else "Bearer",
        cert_thumbprint=thumbprint,
        dpop_proof=req.dpop or "",
        htm=req.htm or "",
        htu=req.htu or "",
    )


def _guard(handler: Handler) -> Handler:
    """Turn core errors into problem responses; anything unexpected into a generic 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except TaskleaseError as exc:
            status, body, headers = problem_response_parts(
                exc, instance=request.url.path, request_id=_request_id(request)
            )
            return Response(body, status, headers=headers, media_type="application/problem+json")
        except Exception:  # noqa: BLE001 - last line of defence: never leak a traceback
            _log.exception("unhandled error on %s", request.url.path)
            body = problem_body(
                "internal_error",
                "internal error",
                instance=request.url.path,
                request_id=_request_id(request),
            )
            return Response(body, 500, media_type="application/problem+json")

    wrapped.__name__ = handler.__name__
    return wrapped


def _parse_time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name} must include a time zone (for example Z)")
    return parsed.timestamp()


def _parse_int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if not -(2**53) <= number <= 2**53:
        raise InvalidRequest(f"{name} is out of range")
    return number


def create_app(
    broker: Broker,
    *,
    background: bool = True,
    close_store: bool = False,
    metrics_render: Callable[[], bytes] | None = None,
) -> Starlette:
    """Build the ASGI application around a ready :class:`Broker`.

    ``background`` starts the housekeeping tasks (pruning, picking up revocations that
    other processes committed); tests that drive time by hand turn it off.
    ``close_store`` closes the broker's store when the application shuts down (the server
    owns the store; in-process tests usually keep it).
    ``metrics_render`` makes the text ``/v1/metrics`` answers with (when
    ``metrics_public`` is ``token``); by default the broker's own metrics, a worker of
    several passes the sum over all workers (``tasklease.http.metrics``).
    """
    cfg = broker.config
    context = _context(RequestURI(cfg))
    admin_limiter = RateLimiter(cfg.admin_auth_rate, cfg.admin_auth_burst)
    app_limiter = RateLimiter(cfg.app_auth_rate, cfg.app_auth_burst)
    # Health and readiness from checks on threads of their own: the routes never wait on
    # storage longer than the checks' bound (docs/operations.md, Health).
    render_metrics = metrics_render or broker.metrics.render
    readiness = broker.readiness

    def limit(limiter: RateLimiter, request: Request) -> None:
        # The TCP peer, or the client a trusted proxy names (never a header from others).
        key = request.client.host if request.client else "unknown"
        if not limiter.allow(key):
            broker.metrics.rate_limited.labels(request.url.path).inc()
            raise RateLimited(retry_after=limiter.retry_after())

    async def authed(
        request: Request,
        kinds: frozenset[str],
        scope: str | None,
        op: Callable[[Claims, RequestContext], T],
    ) -> T:
        ctx = context(request)
        header = request.headers.get("authorization")

        def run() -> T:
            return op(broker.authenticate(header, ctx, kinds=kinds, scope=scope), ctx)

        return await run_in_threadpool(run)

    # --- public ---------------------------------------------------------------------

    async def challenge(request: Request) -> Response:
        nonce, ttl = broker.challenge()
        return _json(wire.ChallengeResponse(nonce=nonce, expires_in=ttl))

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
                await authed(request, ADMIN, OBSERVER_SCOPE, lambda _c, _ctx: None)
                detailed = True
        # From the last check, made every second in the background: only when nobody has
        # checked lately (no background task, or a long pause) wait for a fresh one.
        await checked(wait=readiness.stale())
        report = readiness.health()
        return _json(report if detailed else public_health(report))

    async def health_live(request: Request) -> Response:
        return _json(wire.LiveResponse(status="ok"))

    async def health_ready(request: Request) -> Response:
        await checked(wait=True)
        verdict = readiness.ready()
        if not verdict.ready:
            raise Unavailable(f"not ready: {verdict.reason}", retry_after=1)
        return _json(wire.ReadyResponse(status="ready"))

    async def metrics(request: Request) -> Response:
        # The metrics have a listener of their own (metrics_listen); here, by the
        # operator's choice only, to operators' tokens: otherwise as unknown as any path.
        if cfg.metrics_public != "token":
            return await http_error(request, HTTPException(404))
        await authed(request, ADMIN, OBSERVER_SCOPE, lambda _c, _ctx: None)
        text = await run_in_threadpool(render_metrics)
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    async def jwks(request: Request) -> Response:
        resp = _json(broker.keyring.jwks())
        resp.headers["cache-control"] = "public, max-age=60"
        return resp

    async def openapi(request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")

    async def validate(request: Request) -> Response:
        req = await _body(request, wire.ValidateRequest)
        if not req.token:
            raise InvalidRequest("token field is required")
        presented = _presentation(req)
        ctx = context(request)
        token = req.token

        def check() -> Claims:
            return broker.validate(token, audience=req.audience, presented=presented, ctx=ctx)

        try:
            # Pure CPU on the loop, unless the store may be read (by-reference tokens,
            # high-assurance scopes): then in the thread pool.
            if cfg.critical_scopes or is_reference_token(token):
                claims = await run_in_threadpool(check)
            else:
                claims = check()
        except TokenRejected:
            return Response(_INVALID, media_type="application/json")
        return _json(wire.ValidToken(valid=True, claims=claims.raw))

    async def register(request: Request) -> Response:
        req = await _body(request, wire.RegisterRequest)
        ctx = context(request)

        def prepare() -> PendingRegistration:
            return broker.prepare_register(
                launch_token=req.launch_token,
                nonce=req.nonce,
                public_key=req.public_key,
                signature=req.signature,
                orch_id=req.orch_id,
                task_id=req.task_id,
                requested_scope=req.requested_scope,
                ctx=ctx,
                resource=_one_of(req.resource, req.audience),
            )

        # Checks and signing write nothing: on the loop when the store reads locally (a
        # thread hop costs more than they do), else in a thread. The commit is awaited
        # without holding a thread, so concurrent registrations share a transaction and
        # are answered with one wake-up of the loop.
        pending = prepare() if broker.store.local_reads else await run_in_threadpool(prepare)
        issued = await broker.complete_register(pending)
        return _json(
            wire.RegisterResponse(
                agent_id=issued.claims.sub,
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type=_token_type(issued.claims),
            )
        )

    # --- agent token operations --------------------------------------------------------

    async def renew(request: Request) -> Response:
        issued = await authed(request, ALL_KINDS, None, broker.renew)
        return _json(wire.RenewResponse(access_token=issued.token, expires_in=issued.expires_in))

    async def release(request: Request) -> Response:
        await authed(request, ALL_KINDS, None, broker.release)
        return Response(status_code=204)

    async def delegate(request: Request) -> Response:
        req = await _body(request, wire.DelegateRequest)
        issued = await authed(
            request,
            ALL_KINDS,
            None,
            lambda c, ctx: broker.delegate(
                c,
                delegate_to=req.delegate_to,
                scope=req.scope,
                ttl=req.ttl,
                ctx=ctx,
                resource=_one_of(req.resource, req.audience),
            ),
        )
        return _json(
            wire.DelegateResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                delegation_chain=[
                    wire.delegation_record(r) for r in issued.claims.delegation_chain
                ],
            )
        )

    # --- operator ---------------------------------------------------------------------

    async def revoke(request: Request) -> Response:
        req = await _body(request, wire.RevokeRequest)
        count = await authed(
            request,
            ADMIN,
            "admin:revoke:*",
            lambda c, ctx: broker.revoke(c, level=req.level, target=req.target, ctx=ctx),
        )
        return _json(
            wire.RevokeResponse(
                revoked=True, level=req.level or "", target=req.target or "", count=count
            )
        )

    async def audit_events(request: Request) -> Response:
        q = request.query_params
        limit_ = _parse_int(q.get("limit"), "limit", 100)
        offset = max(0, _parse_int(q.get("offset"), "offset", 0))
        limit_ = 100 if limit_ <= 0 else min(limit_, 1000)
        query = AuditQuery(
            agent_id=q.get("agent_id") or None,
            task_id=q.get("task_id") or None,
            event_type=q.get("event_type") or None,
            outcome=q.get("outcome") or None,
            since=_parse_time(q.get("since"), "since"),
            until=_parse_time(q.get("until"), "until"),
            limit=limit_,
            offset=offset,
        )
        events, total = await authed(
            request, ADMIN, "admin:audit:*", lambda _c, _ctx: broker.audit_events(query)
        )
        return _json(
            wire.AuditEventPage(
                events=[wire.audit_event(e) for e in events],
                total=total,
                offset=offset,
                limit=limit_,
            )
        )

    async def admin_auth(request: Request) -> Response:
        limit(admin_limiter, request)
        req = await _body(request, wire.AdminAuthRequest)
        if req.client_id or req.client_secret:
            raise InvalidRequest(
                'Admin auth format changed. Use {"secret": "..."} '
                "instead of client_id/client_secret"
            )
        ctx = context(request)
        issued = await run_in_threadpool(lambda: broker.admin_auth(req.secret, ctx))
        return _json(
            wire.AdminAuthResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type="Bearer",  # noqa: S106 - a token type, not a secret
            )
        )

    async def operator_auth(request: Request) -> Response:
        # One bucket with the admin secret's route: alternating them buys no attempts.
        limit(admin_limiter, request)
        req = await _body(request, wire.OperatorAuthRequest)
        ctx = context(request)
        issued, operator = await run_in_threadpool(
            lambda: broker.operator_auth(
                name=req.name, secret=req.secret, nonce=req.nonce, signature=req.signature, ctx=ctx
            )
        )
        return _json(
            wire.OperatorAuthResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type="Bearer",  # noqa: S106 - a token type, not a secret
                role=operator.role,
                scopes=list(issued.claims.scope),
            )
        )

    operators_scope = "admin:operators:*"

    async def create_operator(request: Request) -> Response:
        req = await _body(request, wire.OperatorCreateRequest)
        operator, secret = await authed(
            request,
            ADMIN,
            operators_scope,
            lambda c, ctx: broker.add_operator(
                c, name=req.name, role=req.role, public_key=req.public_key, ctx=ctx
            ),
        )
        return _json(wire.operator_with_secret(operator, secret), 201)

    async def list_operators(request: Request) -> Response:
        operators = await authed(
            request, ADMIN, operators_scope, lambda _c, _ctx: broker.list_operators()
        )
        return _json(
            wire.OperatorList(
                operators=[wire.operator_view(o) for o in operators], total=len(operators)
            )
        )

    async def remove_operator(request: Request) -> Response:
        name = request.path_params["name"]
        operator = await authed(
            request, ADMIN, operators_scope, lambda c, ctx: broker.remove_operator(c, name, ctx)
        )
        return _json(wire.removed_operator(operator))

    async def rotate_operator(request: Request) -> Response:
        name = request.path_params["name"]
        req = await _body(request, wire.OperatorRotateRequest)
        operator, secret = await authed(
            request,
            ADMIN,
            operators_scope,
            lambda c, ctx: broker.rotate_operator(c, name, public_key=req.public_key, ctx=ctx),
        )
        return _json(wire.operator_with_secret(operator, secret))

    async def app_auth(request: Request) -> Response:
        limit(app_limiter, request)
        req = await _body(request, wire.AppAuthRequest)
        ctx = context(request)
        issued = await run_in_threadpool(
            lambda: broker.app_auth(req.client_id, req.client_secret, ctx)
        )
        return _json(
            wire.AppAuthResponse(
                access_token=issued.token,
                expires_in=issued.expires_in,
                token_type="Bearer",  # noqa: S106 - a token type, not a secret
                scopes=list(issued.claims.scope),
            )
        )

    async def launch_tokens(request: Request, kinds: frozenset[str], scope: str) -> Response:
        req = await _body(request, wire.LaunchTokenRequest)
        token, record = await authed(
            request,
            kinds,
            scope,
            lambda c, ctx: broker.create_launch_token(
                c,
                agent_name=req.agent_name,
                allowed_scope=req.allowed_scope,
                max_ttl=req.max_ttl,
                single_use=req.single_use,
                ttl=req.ttl,
                ctx=ctx,
                resource=_one_of(req.resource, req.audience),
                principal=req.principal,
                max_uses=req.max_uses,
                allow_resume=req.allow_resume,
            ),
        )
        policy = wire.LaunchTokenPolicy(
            allowed_scope=list(record.allowed_scope),
            max_ttl=record.max_ttl,
            single_use=record.single_use,
            allow_resume=record.allow_resume,
        )
        return _json(
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
        return await launch_tokens(request, ADMIN, "admin:launch-tokens:*")

    async def app_launch_tokens(request: Request) -> Response:
        return await launch_tokens(request, APP, "app:launch-tokens:*")

    apps_scope = "admin:launch-tokens:*"

    async def create_app_(request: Request) -> Response:
        req = await _body(request, wire.AppCreateRequest)
        app, secret = await authed(
            request,
            ADMIN,
            apps_scope,
            lambda c, ctx: broker.register_app(
                c, name=req.name, scopes=req.scopes, token_ttl=req.token_ttl, ctx=ctx
            ),
        )
        return _json(wire.app_with_secret(app, secret), 201)

    async def list_apps(request: Request) -> Response:
        apps = await authed(request, ADMIN, apps_scope, lambda _c, _ctx: broker.list_apps())
        return _json(wire.AppList(apps=[wire.app_view(a) for a in apps], total=len(apps)))

    async def get_app(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        app = await authed(request, ADMIN, apps_scope, lambda _c, _ctx: broker.get_app(app_id))
        return _json(wire.app_view(app))

    async def update_app(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        req = await _body(request, wire.AppUpdateRequest)
        app = await authed(
            request,
            ADMIN,
            apps_scope,
            lambda c, ctx: broker.update_app(
                c, app_id, scopes=req.scopes, token_ttl=req.token_ttl, ctx=ctx
            ),
        )
        return _json(wire.app_view(app))

    async def delete_app(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        app = await authed(
            request, ADMIN, apps_scope, lambda c, ctx: broker.deregister_app(c, app_id, ctx)
        )
        return _json(wire.deregistered_app(app))

    async def rotate_keys(request: Request) -> Response:
        # The admin role's (and the built-in admin's); an operator may revoke but not rotate.
        new_kid, previous_kid = await authed(
            request, ADMIN, "admin:keys:*", broker.rotate_signing_key
        )
        return _json(
            wire.KeyRotationResponse(
                kid=new_kid, previous_kid=previous_kid, kids=broker.keyring.kids()
            )
        )

    routes = [
        Route("/v1/challenge", _guard(challenge), methods=["GET"]),
        Route("/v1/health", _guard(health), methods=["GET"]),
        Route("/v1/health/live", _guard(health_live), methods=["GET"]),
        Route("/v1/health/ready", _guard(health_ready), methods=["GET"]),
        Route("/v1/metrics", _guard(metrics), methods=["GET"]),
        Route("/.well-known/jwks.json", _guard(jwks), methods=["GET"]),
        Route("/v1/openapi.json", _guard(openapi), methods=["GET"]),
        Route("/v1/token/validate", _guard(validate), methods=["POST"]),
        Route("/v1/register", _guard(register), methods=["POST"]),
        Route("/v1/token/renew", _guard(renew), methods=["POST"]),
        Route("/v1/token/release", _guard(release), methods=["POST"]),
        Route("/v1/delegate", _guard(delegate), methods=["POST"]),
        Route("/v1/revoke", _guard(revoke), methods=["POST"]),
        Route("/v1/audit/events", _guard(audit_events), methods=["GET"]),
        Route("/v1/admin/auth", _guard(admin_auth), methods=["POST"]),
        Route("/v1/admin/launch-tokens", _guard(admin_launch_tokens), methods=["POST"]),
        Route("/v1/app/launch-tokens", _guard(app_launch_tokens), methods=["POST"]),
        Route("/v1/admin/apps", _guard(create_app_), methods=["POST"]),
        Route("/v1/admin/apps", _guard(list_apps), methods=["GET"]),
        Route("/v1/admin/apps/{app_id}", _guard(get_app), methods=["GET"]),
        Route("/v1/admin/apps/{app_id}", _guard(update_app), methods=["PUT"]),
        Route("/v1/admin/apps/{app_id}", _guard(delete_app), methods=["DELETE"]),
        Route("/v1/app/auth", _guard(app_auth), methods=["POST"]),
        Route("/v1/admin/keys/rotate", _guard(rotate_keys), methods=["POST"]),
        Route("/v1/operator/auth", _guard(operator_auth), methods=["POST"]),
        Route("/v1/admin/operators", _guard(create_operator), methods=["POST"]),
        Route("/v1/admin/operators", _guard(list_operators), methods=["GET"]),
        Route("/v1/admin/operators/{name}", _guard(remove_operator), methods=["DELETE"]),
        Route("/v1/admin/operators/{name}/rotate", _guard(rotate_operator), methods=["POST"]),
    ]
    hub = RevocationHub(broker)
    routes += revocation_routes(broker, hub, guard=_guard, context=context)
    routes += agent_routes(broker, guard=_guard, context=context)
    routes += token_routes(broker, guard=_guard, context=context)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "internal_error")
        detail = {404: "no such endpoint", 405: "method not allowed"}.get(status, "internal error")
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        body = problem_body(
            code, detail, instance=request.url.path, request_id=_request_id(request)
        )
        return Response(body, status, headers=headers, media_type="application/problem+json")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        # A store that notifies (PostgreSQL) is followed by a watch thread; others polled.
        stop_watch = broker.watch_revocations() if background else None
        if background:
            tasks.append(asyncio.create_task(_refreshing(readiness)))
            tasks.append(asyncio.create_task(_every(cfg.prune_interval, broker.prune)))
            tasks.append(asyncio.create_task(_every(KEY_REFRESH_INTERVAL, broker.refresh_keys)))
            # Liveness: a silent agent is revoked within one interval of its deadline.
            tasks.append(
                asyncio.create_task(_every(cfg.heartbeat_interval, broker.sweep_silent_agents))
            )
        if background and stop_watch is None:
            tasks.append(
                asyncio.create_task(_every(REVOCATION_POLL_INTERVAL, broker.refresh_revocations))
            )
        try:
            yield
        finally:
            if stop_watch is not None:
                await run_in_threadpool(stop_watch)
            await hub.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Whatever the committer thread still has queued is written before we go.
            await run_in_threadpool(broker.audit.close)
            if close_store:
                # Here, not after uvicorn returns: on SIGTERM uvicorn re-raises the signal
                # once the lifespan has finished, and the process ends there.
                broker.store.close()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.add_middleware(
        EnvelopeMiddleware,
        max_body=cfg.max_body_bytes,
        hsts=cfg.tls_mode != "none",
        multiline=wire.MULTILINE_FIELDS,
    )
    if cfg.trusted_proxies:
        # Outermost, so every layer sees the client a trusted proxy names. The server does
        # no proxy-header handling of its own (see server.py and docs/decisions.md).
        app.add_middleware(TrustedProxyMiddleware, trusted=cfg.trusted_proxies)
    app.state.broker = broker
    return app


async def _refreshing(readiness: Readiness) -> None:
    """Start the health checks every interval, on the loop (they run on their own
    threads): a thread pool taken up by requests stuck on storage cannot delay them."""
    while True:
        readiness.refresh()
        await asyncio.sleep(INTERVAL)


async def _every(interval: float, job: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(job)
        except Exception:  # noqa: BLE001 - housekeeping must never take the server down
            _log.exception("background job failed")
