"""Token holders' revocation (RFC 7009) and introspection (RFC 7662) over HTTP.

``POST /v1/token/revoke`` — the caller authenticates with an agent token (``Bearer``, or
``DPoP`` with a proof for a DPoP-bound token); ``token`` names a token of the same agent
(the caller's own, or another of its tokens). Always 200 ``{}`` unless the request is
malformed or the token belongs to another agent, so the answer never tells whether an
unknown token existed.

``POST /v1/introspect`` — the caller authenticates with an admin or app token; the answer
is the token's claims with ``active: true`` or exactly ``{"active": false}``.

Both take ``application/x-www-form-urlencoded`` bodies as the RFCs define them, and JSON.
Also here: the request URI a DPoP proof's ``htu`` must name (:class:`RequestURI`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.auditformat import clipped
from tasklease.core.broker import Broker, Pending, RequestContext
from tasklease.core.config import Config
from tasklease.core.errors import InvalidRequest, InvalidTarget
from tasklease.core.tokens import KIND_AGENT
from tasklease.http import wire
from tasklease.http._reading import first_half
from tasklease.http.jsonbody import decode_json_body
from tasklease.http.middleware import is_form
from tasklease.rules.binding import expected_htu, origin_of, url_path

__all__ = [
    "RequestURI",
    "form_parameters",
    "parse_token_request",
    "request_path",
    "token_routes",
]

Handler = Callable[[Request], Awaitable[Response]]
_FIELDS = ("token", "token_type_hint", "audience")
_AGENT = frozenset({KIND_AGENT})
_encoder = msgspec.json.Encoder()
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind


def _origin(scheme: str, host: str, port: int | None) -> str | None:
    """``scheme://host[:port]`` normalized as RFC 9449 compares (default port dropped)."""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return origin_of(f"{scheme}://{netloc}")


def request_path(scope: MutableMapping[str, Any]) -> str:
    """The request's path as its URL gives it (``request.url.path``), without building the
    URL: the ASGI path (the mount's prefix included) with ``?``, ``#`` and ``\\``
    percent-encoded, as the URL writes them. What the audit trail records; a DPoP proof
    names the path encoded as the client wrote it (``rules.binding.url_path``)."""
    return str(scope["path"]).replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


class RequestURI:
    """The request URI a DPoP proof's ``htu`` must name (RFC 9449 section 4.3 point 9).

    It is one of the broker's own origins + the request path, never built from the
    ``Host`` header: a proof minted for another server is not made valid here by sending
    that server's name as ``Host``. The origins are ``public_url``; when that is unset,
    the configured bind address (unless a wildcard) and the local address of the
    connection, with the scheme the broker serves (``https`` when TLS is on).

    With several origins, the one the proof names is chosen (its ``htu`` read without
    verification, only to pick among our own origins); the broker then checks the proof
    against that URI as usual. With none matching, the first is used, and the check fails.
    """

    def __init__(self, config: Config) -> None:
        self.scheme = "http" if config.tls_mode == "none" else "https"
        configured: dict[str, None] = {}
        for url in config.public_url:
            origin = origin_of(url)
            if origin is not None:
                configured[origin] = None
        self.configured = tuple(configured)
        self.bound = (
            None if config.host in _WILDCARDS else _origin(self.scheme, config.host, config.port)
        )
        self._by_server: dict[tuple[str, int], tuple[str, ...]] = {}

    def origins(self, scope: MutableMapping[str, Any]) -> tuple[str, ...]:
        """The origins a proof for a request arriving on this scope's connection may name."""
        if self.configured:
            return self.configured
        server = scope.get("server")
        if not server or server[1] is None:
            return (self.bound,) if self.bound else ()
        key = (str(server[0]), int(server[1]))
        found = self._by_server.get(key)
        if found is None:
            local = _origin(self.scheme, *key)
            found = tuple(dict.fromkeys(o for o in (self.bound, local) if o is not None))
            if len(self._by_server) < 64:  # the server's own addresses: a handful
                self._by_server[key] = found
        return found

    def htu(self, request: Request, proof: str) -> str:
        """The URI ``proof`` must name for ``request`` ("" when no origin is known)."""
        return expected_htu(
            self.origins(request.scope), url_path(str(request.scope["path"])), proof
        )


async def parse_token_request(request: Request) -> wire.TokenRequest:
    """A form (RFC 7009 section 2.1, RFC 7662 section 2.1) or JSON token request.

    Raises:
        InvalidRequest: empty or malformed body, or a form parameter given twice
            (RFC 6749 section 3.1).
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("missing required field: token")
    if not is_form(request.headers.get("content-type")):
        return decode_json_body(raw, wire.TokenRequest, form_too=True)
    values = form_parameters(raw, max_fields=16)
    return wire.TokenRequest(**{k: values[k] for k in _FIELDS if k in values})


def form_parameters(
    raw: bytes, *, max_fields: int, targets: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The parameters of an OAuth form body (``application/x-www-form-urlencoded``) by
    name, as RFC 6749 section 3.2 reads them: one given more than once is refused (even
    when one of its values is empty), and one sent without a value is left out, "as if
    omitted from the request" (``resource=``, ``actor_token=`` or ``client_id=`` beside a
    Basic header are no value, not an empty one).

    ``targets`` name the parameters that say what a token is for (``resource``,
    ``audience``): given more than once they ask for one token for several targets, which
    RFC 8707 section 2 and RFC 8693 section 2.2.2 refuse as ``invalid_target`` (a token
    here has one audience), not as a malformed request.

    Raises:
        InvalidRequest: not ASCII, malformed, more than ``max_fields`` parameters, or a
            parameter given more than once.
        InvalidTarget: one of ``targets`` given more than once.
    """
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=max_fields,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form body") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values and name in targets:
            raise InvalidTarget(
                f"{name} given more than once: a token here is for one target",
                hint=f"send one {name}",
            )
        if name in values:
            raise InvalidRequest(f"parameter {clipped(name, 32)} given more than once")
        values[name] = value
    return {name: value for name, value in values.items() if value}


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

        def first() -> Pending[bool]:
            caller = broker.authenticate(header, ctx, kinds=_AGENT)
            return broker.prepare_revoke_token(
                caller, token=req.token, token_type_hint=req.token_type_hint, ctx=ctx
            )

        # Checked on the loop (http._reading); what was deferred (a DPoP proof's record
        # too) and the commit are awaited without a thread (core.pending).
        await broker.answer(await first_half(first, store=broker.store))
        return _json(wire.TokenRevocationResponse())

    async def introspect(request: Request) -> Response:
        req = await parse_token_request(request)
        ctx = context(request)
        header = request.headers.get("authorization")

        def run() -> dict[str, Any]:
            caller = broker.authenticate_introspector(header, ctx)
            return broker.introspect(caller, token=req.token, audience=req.audience, ctx=ctx)

        # A read, on the loop (http._reading); its audit events (a refused caller, a
        # high-assurance denial) are written before the answer.
        return _json(await broker.settle(await first_half(run, store=broker.store)))

    return [
        Route("/v1/token/revoke", guard(revoke_token), methods=["POST"]),
        Route("/v1/introspect", guard(introspect), methods=["POST"]),
    ]
