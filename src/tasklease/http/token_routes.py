"""Token holders' revocation (RFC 7009) and introspection (RFC 7662) over HTTP.

``POST /v1/token/revoke`` — the caller authenticates with an agent token (``Bearer``, or
``DPoP`` with a proof for a DPoP-bound token); ``token`` names a token of the same agent
(the caller's own, or another of its tokens). Always 200 ``{}`` unless the request is
malformed or the token belongs to another agent, so the answer never tells whether an
unknown token existed.

``POST /v1/introspect`` — the caller authenticates with an admin or app token; the answer
is the token's claims with ``active: true`` or exactly ``{"active": false}``.

Both take ``application/x-www-form-urlencoded`` bodies as the RFCs define them, and JSON.
Also here: the request URI used for DPoP ``htu`` checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.errors import InvalidRequest
from tasklease.core.tokens import KIND_AGENT
from tasklease.http import wire

__all__ = ["parse_token_request", "request_htu", "token_routes"]

Handler = Callable[[Request], Awaitable[Response]]
_FORM = "application/x-www-form-urlencoded"
_FIELDS = ("token", "token_type_hint", "audience")
_AGENT = frozenset({KIND_AGENT})
_encoder = msgspec.json.Encoder()


def request_htu(request: Request) -> str:
    """Scheme, host and path of this request (RFC 9449 ``htu``: no query, no fragment).

    The host is the ``Host`` header the client addressed, which is what it signs; the
    scheme is the connection's.
    """
    scheme = request.scope.get("scheme", "http")
    host = request.headers.get("host", "")
    return f"{scheme}://{host}{request.url.path}"


async def parse_token_request(request: Request) -> wire.TokenRequest:
    """A form (RFC 7009 section 2.1, RFC 7662 section 2.1) or JSON token request.

    Raises:
        InvalidRequest: empty or malformed body, or a form parameter given twice
            (RFC 6749 section 3.1).
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("missing required field: token")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _FORM:
        try:
            return msgspec.json.decode(raw, type=wire.TokenRequest)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"malformed JSON body: {exc}") from None
        except msgspec.DecodeError:
            raise InvalidRequest("malformed body: send a form or JSON") from None
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=16
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form body") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise InvalidRequest(f"parameter {name} given more than once")
        values[name] = value
    return wire.TokenRequest(**{k: values[k] for k in _FIELDS if k in values})


def _json(data: Any) -> Response:
    return Response(_encoder.encode(data) + b"\n", 200, media_type="application/json")


def token_routes(
    broker: Broker,
    *,
    guard: Callable[[Handler], Handler],
    context: Callable[[Request], RequestContext],
) -> list[Route]:
    """The routes, wrapped by the application's problem ``guard``."""

    async def revoke_token(request: Request) -> Response:
        req = await parse_token_request(request)
        ctx = context(request)
        header = request.headers.get("authorization")

        def run() -> None:
            caller = broker.authenticate(header, ctx, kinds=_AGENT)
            broker.revoke_token(
                caller, token=req.token, token_type_hint=req.token_type_hint, ctx=ctx
            )

        await run_in_threadpool(run)
        return _json(wire.TokenRevocationResponse())

    async def introspect(request: Request) -> Response:
        req = await parse_token_request(request)
        ctx = context(request)
        header = request.headers.get("authorization")

        def run() -> dict[str, Any]:
            caller = broker.authenticate_introspector(header, ctx)
            return broker.introspect(caller, token=req.token, audience=req.audience, ctx=ctx)

        return _json(await run_in_threadpool(run))

    return [
        Route("/v1/token/revoke", guard(revoke_token), methods=["POST"]),
        Route("/v1/introspect", guard(introspect), methods=["POST"]),
    ]
