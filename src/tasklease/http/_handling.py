"""What every route module shares: reading a request, answering, and turning errors into
problem responses.

The route modules (``lease_routes``, ``admin_routes``, ``health_routes``,
``agent_routes``, ``token_routes``, ``feed``) parse a request, call the Broker and
translate its answer; the pieces they all need are here once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tasklease.core.audience import validate_resource_uri
from tasklease.core.broker import Broker, Pending, RequestContext
from tasklease.core.errors import InvalidRequest, InvalidTarget, TaskleaseError
from tasklease.core.kernel import recorded_path
from tasklease.core.tokens import Claims
from tasklease.http._reading import first_half, run_reading
from tasklease.http.access import route_template
from tasklease.http.jsonbody import decode_json_body
from tasklease.http.problems import problem_body, problem_response_parts
from tasklease.http.tls import peer_cert_thumbprint
from tasklease.http.token_routes import RequestURI, request_path

__all__ = [
    "Authed",
    "Handler",
    "Prepared",
    "authenticated",
    "first_half",
    "guard",
    "http_error",
    "json_response",
    "one_of",
    "prepared",
    "read_body",
    "request_context",
    "request_id",
    "run_reading",
]

_log = logging.getLogger("tasklease.http")
_encoder = msgspec.json.Encoder()
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(data) + b"\n", status, media_type="application/json")


def request_id(request: Request) -> str:
    found: str = request.scope.get("state", {}).get("request_id", "")
    return found


def request_context(uri: RequestURI) -> Callable[[Request], RequestContext]:
    """Build each request's :class:`RequestContext`; ``uri`` gives the expected DPoP htu."""

    def context(request: Request) -> RequestContext:
        client = request.client  # the TCP peer, or what a trusted proxy says it saw
        # Proof-of-possession material: the certificate from the TLS connection only;
        # several DPoP headers join into one that fails (RFC 9449 section 4.3 point 1).
        dpop = ",".join(request.headers.getlist("dpop"))
        return RequestContext(
            request_id=request_id(request),
            remote=client.host if client else "",
            path=recorded_path(request_path(request.scope)),
            route=route_template(request.scope),
            cert_thumbprint=peer_cert_thumbprint(request.scope),
            dpop=dpop,
            method=request.method,
            url=uri.htu(request, dpop),
        )

    return context


async def read_body(request: Request, kind: type[T]) -> T:
    """The request's JSON body as ``kind``.

    Raises:
        InvalidRequest: the body is empty, nested too deeply, names a member twice or is
            not a valid ``kind``.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("malformed JSON body: the body is empty")
    return decode_json_body(raw, kind)


def one_of(resource: T | None, audience: T | None) -> T | None:
    """``resource`` and its alias ``audience``: either, or both if they agree.

    ``resource`` is RFC 8707's: absolute URIs only (``invalid_target`` otherwise);
    ``audience`` may also be a logical name (RFC 8693 section 2.1).
    """
    if resource is not None:
        validate_resource_uri(resource)
    if resource is not None and audience is not None and resource != audience:
        raise InvalidTarget("resource and audience disagree: send one of them")
    return resource if resource is not None else audience


class Authed(Protocol):
    """Authenticate the request's bearer, then run ``op`` with its claims, in a thread.

    ``reads=True`` says ``op`` only reads: then both run on the event loop
    (:func:`run_reading`), their audit events (a refusal's) and the record of a DPoP
    proof as used deferred and written before the answer.
    """

    async def __call__(
        self,
        request: Request,
        kinds: frozenset[str],
        scope: str | None,
        op: Callable[[Claims, RequestContext], T],
        *,
        reads: bool = False,
    ) -> T: ...


class Prepared(Protocol):
    """Authenticate the request's bearer, run ``op`` (a ``prepare_*`` of the broker:
    checks and signing, nothing written), then commit what it decided, awaited."""

    async def __call__(
        self,
        request: Request,
        kinds: frozenset[str],
        scope: str | None,
        op: Callable[[Claims, RequestContext], Pending[T]],
    ) -> T: ...


def authenticated(broker: Broker, context: Callable[[Request], RequestContext]) -> Authed:
    """The :class:`Authed` of the routes that ``broker`` serves."""

    async def authed(
        request: Request,
        kinds: frozenset[str],
        scope: str | None,
        op: Callable[[Claims, RequestContext], T],
        *,
        reads: bool = False,
    ) -> T:
        ctx = context(request)
        header = request.headers.get("authorization")

        def run() -> T:
            return op(broker.authenticate(header, ctx, kinds=kinds, scope=scope), ctx)

        if reads:
            return await broker.settle(await first_half(run, store=broker.store))
        return await run_in_threadpool(run)

    return authed


def prepared(broker: Broker, context: Callable[[Request], RequestContext]) -> Prepared:
    """The :class:`Prepared` of the routes that ``broker`` serves.

    Authentication and the first half write nothing (refusals' audit events and the
    record of a DPoP proof as used are deferred, ``core.audit.deferring``): on the event
    loop (:func:`run_reading`). What was deferred is then written, and the operation
    committed, awaited without holding a thread, so concurrent writers share one
    transaction and are answered with one wake-up of the loop.
    """

    async def run(
        request: Request,
        kinds: frozenset[str],
        scope: str | None,
        op: Callable[[Claims, RequestContext], Pending[T]],
    ) -> T:
        ctx = context(request)
        header = request.headers.get("authorization")

        def first() -> Pending[T]:
            return op(broker.authenticate(header, ctx, kinds=kinds, scope=scope), ctx)

        return await broker.answer(await first_half(first, store=broker.store))

    return run


def guard(handler: Handler) -> Handler:
    """Turn core errors into problem responses; anything unexpected into a generic 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except TaskleaseError as exc:
            status, body, headers = problem_response_parts(
                exc, instance=request.url.path, request_id=request_id(request)
            )
            return Response(body, status, headers=headers, media_type="application/problem+json")
        except Exception:  # noqa: BLE001 - last line of defence: never leak a traceback
            # The route's template, never the path as sent (a credential pasted where an
            # id belongs would reach the log), as the access log names it.
            _log.exception(
                "unhandled error on %s (request %s)",
                route_template(request.scope),
                request_id(request),
            )
            body = problem_body(
                "internal_error",
                "internal error",
                instance=request.url.path,
                request_id=request_id(request),
            )
            return Response(body, 500, media_type="application/problem+json")

    wrapped.__name__ = handler.__name__
    return wrapped


async def http_error(request: Request, exc: Exception) -> Response:
    """The problem response for Starlette's own errors (no such route, wrong method)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "internal_error")
    detail = {404: "no such endpoint", 405: "method not allowed"}.get(status, "internal error")
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    body = problem_body(code, detail, instance=request.url.path, request_id=request_id(request))
    return Response(body, status, headers=headers, media_type="application/problem+json")
