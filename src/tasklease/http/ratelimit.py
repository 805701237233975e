"""Rate limits by client: the gate that holds each client to its budget of audited
refusals (``core.refusalbudget``), and the sign-in limits (:func:`limit_sign_in`); both
kept by the broker (``core.clientlimits``), whose refusals are audited by runs.

A client is its address (:func:`client_key`): the TCP peer, or the client a proxy listed
in ``trusted_proxies`` names in ``X-Forwarded-For`` (from anyone else that header is
ignored: anyone can send it), an IPv6 address folded to its /64. Every table is bounded:
the least recently seen keys are dropped first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tasklease.core.broker import Broker, SignIn
from tasklease.core.errors import RateLimited, TaskleaseError
from tasklease.http.access import route_template
from tasklease.http.problems import problem_response_parts

__all__ = ["RefusalGate", "client_key", "client_of", "gate_refusals", "limit_sign_in"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def client_key(host: str) -> str:
    """The client a limit counts for ``host``, an address: an IPv4 address as it is (an
    IPv4-mapped IPv6 one as its IPv4), an IPv6 address as its /64 (``2001:db8::/64``):
    one host commonly has a whole /64 to itself, so that keying on the /128 would give
    it 2**64 fresh buckets. Anything else (no address at all) as it is."""
    if ":" not in host:
        # IPv4 as the server wrote it (its own dotted form), or no address at all: as is.
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


def client_of(request: Request) -> str:
    """:func:`client_key` of the request's client (after the trusted-proxy rewrite)."""
    return client_key(request.client.host) if request.client else "unknown"


async def limit_sign_in(broker: Broker, kind: SignIn, request: Request) -> None:
    """Spend one sign-in attempt of ``kind`` (``"admin"``: the admin secret's and
    operators'; ``"app"``: app sign-ins and client credentials) for the request's client,
    or raise the refusal: ``rate_limited`` with ``Retry-After`` and the ``denial_id`` of
    the one audit event of its run (:meth:`Broker.admit_sign_in`), counted in
    ``tasklease_rate_limited_total``. Call it before any work: it guards the secret's
    check (argon2id) and the audit write of a refused sign-in."""
    refused = await broker.admit_sign_in(
        kind, client_of(request), request_id=_request_id(request.scope)
    )
    if refused is not None:
        # By route template, as every metric labels a route: never the raw path.
        broker.metrics.rate_limited.labels(route_template(request.scope)).inc()
        raise refused


def _request_id(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


class RefusalGate:
    """Holds each client of one tenant's route to its budget of audited refusals.

    A client that has spent it is answered ``429 rate_limited`` (``Retry-After``, and the
    ``denial_id`` of its run's one audit event) before the route does anything; otherwise
    the route is served with the refusals it audits charged to the client.
    """

    def __init__(self, app: ASGIApp, broker: Broker) -> None:
        self.app = app
        self.broker = broker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        client = client_key(peer[0]) if peer else "unknown"
        budget = self.broker.refusals
        refused: TaskleaseError | None = None
        if not budget.admits(client):
            try:
                refused = await self.broker.admit_client(client, request_id=_request_id(scope))
            except TaskleaseError as exc:  # its run's event could not be written: 503
                refused = exc
        if refused is None:
            token = budget.charge(client)
            try:
                await self.app(scope, receive, send)
            finally:
                budget.uncharge(token)
            return
        if isinstance(refused, RateLimited):
            self.broker.metrics.rate_limited.labels(route_template(scope)).inc()
        request = Request(scope, receive)
        status, body, headers = problem_response_parts(
            refused, instance=request.url.path, request_id=_request_id(scope)
        )
        response = Response(body, status, headers=headers, media_type="application/problem+json")
        await response(scope, receive, send)


def gate_refusals(broker: Broker, routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """``routes`` (served by ``broker``), each behind a :class:`RefusalGate`."""
    gated = list(routes)
    for route in gated:
        app = getattr(route, "app", None)
        if app is not None:
            route.app = RefusalGate(app, broker)  # type: ignore[attr-defined]
    return gated
