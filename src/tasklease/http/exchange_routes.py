"""The OAuth token endpoint for RFC 8693 token exchange: ``POST /v1/oauth/token``.

The body is a form (RFC 6749 section 3.2; a parameter may not repeat, section 3.1) or
JSON with the same names. No ``Authorization`` header: the tokens in the body are the
credentials, and the one the caller holds (``actor_token``, or ``subject_token`` when
narrowing) is checked with the request's DPoP proof or client certificate when bound.
The answer is RFC 8693 section 2.2.1's, never cached (RFC 6749 section 5.1); a refusal
is a problem carrying RFC 6749 section 5.2's ``error`` and ``error_description``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.errors import InvalidRequest
from tasklease.core.exchange import ExchangeRequest
from tasklease.http import wire
from tasklease.http._handling import one_of
from tasklease.http.middleware import json_nesting_error

__all__ = ["exchange_routes", "parse_exchange_request"]

Handler = Callable[[Request], Awaitable[Response]]
_FORM = "application/x-www-form-urlencoded"
_FIELDS = frozenset(f.name for f in msgspec.structs.fields(wire.TokenExchangeRequest))
_encoder = msgspec.json.Encoder()
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


async def parse_exchange_request(request: Request) -> wire.TokenExchangeRequest:
    """The form or JSON body as a :class:`wire.TokenExchangeRequest`.

    Raises:
        InvalidRequest: empty or malformed, or a form parameter given more than once.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("missing required field: grant_type")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _FORM:
        nested = json_nesting_error(raw)
        if nested is not None:
            raise InvalidRequest(nested)
        try:
            return msgspec.json.decode(raw, type=wire.TokenExchangeRequest)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"malformed JSON body: {exc}") from None
        except (msgspec.DecodeError, RecursionError):
            raise InvalidRequest("malformed body: send a form or JSON") from None
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form body") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise InvalidRequest(f"parameter {name[:32]} given more than once")
        values[name] = value
    return wire.TokenExchangeRequest(**{k: v for k, v in values.items() if k in _FIELDS})


def exchange_routes(
    broker: Broker,
    *,
    guard: Callable[[Handler], Handler],
    context: Callable[[Request], RequestContext],
) -> list[Route]:
    """The token endpoint, wrapped by the application's problem ``guard``."""

    async def token(request: Request) -> Response:
        req = await parse_exchange_request(request)
        ctx = context(request)
        exchange = ExchangeRequest(
            grant_type=req.grant_type,
            subject_token=req.subject_token,
            subject_token_type=req.subject_token_type,
            actor_token=req.actor_token,
            actor_token_type=req.actor_token_type,
            requested_token_type=req.requested_token_type,
            scope=req.scope,
            resource=one_of(req.resource, req.audience),
        )
        done = await run_in_threadpool(broker.exchange_token, exchange, ctx)
        body = wire.TokenExchangeResponse(
            access_token=done.token,
            issued_token_type=done.issued_token_type,
            token_type=done.token_type,
            expires_in=done.issued.expires_in,
            scope=" ".join(done.scope),
        )
        return Response(
            _encoder.encode(body) + b"\n", 200, headers=_NO_STORE, media_type="application/json"
        )

    return [Route("/v1/oauth/token", guard(token), methods=["POST"])]
