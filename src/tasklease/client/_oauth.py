"""OAuth for agents: a token for one resource by token exchange, the ``Auth`` that
presents it, and finding a resource's broker from its metadata (sans-I/O flows, as in
``_flows``).

* :func:`exchange_flow`: RFC 8693 narrowing at ``POST /v1/oauth/token``: the agent's own
  token becomes the parent of one for a single resource (RFC 8707 ``resource``), with
  fewer scopes if asked; a DPoP-bound token is exchanged with a proof (``ath`` of it) and
  the new token is bound to the same key.
* :func:`discover_flow`: RFC 9728 protected-resource metadata of a resource (an MCP
  server), then RFC 8414 metadata of each authorization server it names, each checked as
  those RFCs say (section 3.3 of each: the document names what its URL was built from).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from tasklease import bounds, forksafe
from tasklease.client._brokerurl import METADATA, check_request_url
from tasklease.client._errors import InvalidRequest, TaskleaseError
from tasklease.client._flows import Clock, Flow, expect_json
from tasklease.client._holder import DPoPKey
from tasklease.rules.cleartext import may_carry_credentials

__all__ = [
    "AsyncResourceAuth",
    "AuthorizationServer",
    "ProtectedResource",
    "ResourceAuth",
    "ResourceToken",
    "discover_flow",
    "exchange_flow",
    "resource_metadata_url",
    "well_known_url",
]

EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
_FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')
# Authorization servers of a protected resource's document asked for their metadata, at
# most (RFC 9728 lists them in order of preference).
MAX_AUTHORIZATION_SERVERS = 4


@dataclass(frozen=True, slots=True)
class ResourceToken:
    """A token for one resource, from :meth:`Agent.exchange`; not renewed by itself
    (``Agent.auth_for`` exchanges again before it expires)."""

    token: str
    token_type: str  # "Bearer", or "DPoP" for a token bound to the agent's DPoP key
    scope: tuple[str, ...]
    resource: str | None
    expires_at: float
    dpop: DPoPKey | None = None

    def headers(self, method: str, url: str) -> dict[str, str]:
        """The headers that present this token on one request."""
        if self.dpop is None:
            return {"Authorization": f"Bearer {self.token}"}
        return {
            "Authorization": f"DPoP {self.token}",
            "DPoP": self.dpop.proof(method, url, self.token),
        }

    def __repr__(self) -> str:
        return f"ResourceToken(resource={self.resource!r}, scope={list(self.scope)!r})"


def exchange_flow(
    base_url: str,
    subject_token: str,
    *,
    resource: str | None,
    scope: Sequence[str] | None,
    clock: Clock,
    dpop: DPoPKey | None = None,
) -> Flow[ResourceToken]:
    """Narrow ``subject_token`` (the agent's own) to ``resource`` and ``scope``."""
    if isinstance(scope, str):
        raise InvalidRequest("scope must be a list of scope strings, not one string")
    form = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    if resource is not None:
        # RFC 8707 resource for an absolute URI; RFC 8693 audience for a logical name.
        form["resource" if "://" in resource else "audience"] = resource
    if scope:
        form["scope"] = " ".join(scope)
    url = base_url.rstrip("/") + "/v1/oauth/token"
    headers = dict(_FORM)
    if dpop is not None:
        headers["DPoP"] = dpop.proof("POST", url, subject_token)
    answer = expect_json((yield httpx.Request("POST", url, data=form, headers=headers)))
    token, expires_in = answer.get("access_token"), bounds.lifetime(answer.get("expires_in"))
    if not isinstance(token, str) or expires_in is None:
        raise TaskleaseError("the broker's answer lacks the token", code="bad_response")
    token_type = answer.get("token_type")
    granted = answer.get("scope")
    return ResourceToken(
        token=token,
        token_type=token_type if isinstance(token_type, str) else "Bearer",
        scope=tuple(granted.split()) if isinstance(granted, str) else tuple(scope or ()),
        resource=resource,
        expires_at=clock.now() + expires_in,
        dpop=dpop if token_type == "DPoP" else None,  # noqa: S105 - a token type
    )


# --- presenting them ---------------------------------------------------------------------


def _due(token: ResourceToken | None, clock: Clock, margin: float) -> bool:
    return token is None or clock.now() >= token.expires_at - margin


def _present(request: httpx.Request, token: ResourceToken) -> httpx.Request:
    request.headers.update(token.headers(request.method, str(request.url)))
    return request


class ResourceAuth(httpx.Auth):
    """Presents a token for one resource, exchanged from the agent's own when due
    (``margin`` seconds before it expires) and once more when the resource answers 401;
    never on a request over plain HTTP beyond loopback without ``insecure_http`` (checked
    before any exchange)."""

    def __init__(
        self,
        fetch: Callable[[], ResourceToken],
        clock: Clock,
        margin: float,
        *,
        insecure_http: bool | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._insecure_http = insecure_http
        self._token: ResourceToken | None = None
        self._lock = threading.Lock()
        forksafe.track(self)

    def _current(self, *, again: bool = False) -> ResourceToken:
        with self._lock:
            if again or self._token is None or _due(self._token, self._clock, self._margin):
                self._token = self._fetch()
            return self._token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        check_request_url(request.url, self._insecure_http)
        used = self._current()
        response = yield _present(request, used)
        if response.status_code == 401 and self._token is used:
            yield _present(request, self._current(again=True))

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:  # pragma: no cover
        raise RuntimeError("Agent.auth_for is for httpx.Client; use AsyncAgent.auth_for")
        yield request


class AsyncResourceAuth(httpx.Auth):
    """The async twin of :class:`ResourceAuth`, for ``AsyncClient`` (httpx or httpx2)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[ResourceToken]],
        clock: Clock,
        margin: float,
        *,
        insecure_http: bool | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._insecure_http = insecure_http
        self._token: ResourceToken | None = None
        self._lock = asyncio.Lock()
        forksafe.track(self)

    async def _current(self, *, again: bool = False) -> ResourceToken:
        async with self._lock:
            if again or self._token is None or _due(self._token, self._clock, self._margin):
                self._token = await self._fetch()
            return self._token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:  # pragma: no cover
        raise RuntimeError("AsyncAgent.auth_for is for httpx.AsyncClient; use Agent.auth_for")
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        check_request_url(request.url, self._insecure_http)
        used = await self._current()
        response = yield _present(request, used)
        if response.status_code == 401 and self._token is used:
            yield _present(request, await self._current(again=True))


# --- discovery -------------------------------------------------------------------------


def well_known_url(identifier: str, name: str) -> str:
    """RFC 8414 / RFC 9728 section 3.1: ``/.well-known/<name>`` goes between the host and
    the identifier's path (a trailing ``/`` removed first)."""
    parts = urlsplit(identifier)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidRequest(f"not an http(s) URL without query or fragment: {identifier[:200]}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}/.well-known/{name}{path}"


def resource_metadata_url(www_authenticate: str) -> str | None:
    """The ``resource_metadata`` URL of a ``WWW-Authenticate`` answer (RFC 9728 section
    5.1), or None."""
    for match in _PARAM.finditer(www_authenticate):
        if match[1] == "resource_metadata":
            return match[2]
    return None


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    """An authorization server's RFC 8414 metadata, as checked."""

    issuer: str
    token_endpoint: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    """A resource's RFC 9728 metadata and the authorization servers it names."""

    resource: str
    scopes_supported: tuple[str, ...]
    authorization_servers: tuple[AuthorizationServer, ...]
    metadata: dict[str, Any]


def _get(url: str) -> httpx.Request:
    return httpx.Request("GET", url, headers={"Accept": "application/json"})


def _http_url(url: str) -> bool:
    """An absolute ``http(s)`` URL with a host, that ``urllib`` can split (a URL in a
    document someone else wrote may be none: ``https://[x``, a port out of range)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is none
    except ValueError:
        return False
    return parts.scheme in ("https", "http") and bool(parts.hostname)


def _safe(url: str) -> bool:
    """An ``https`` URL, or ``http`` to a loopback host (``rules.cleartext``); never one
    that :func:`_http_url` refuses."""
    if not _http_url(url):
        return False
    parts = urlsplit(url)
    return may_carry_credentials(parts.scheme, parts.hostname or "")


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _encloses(named: str, called: str) -> bool:
    """Whether the resource ``named`` is ``called``'s origin, or its origin and a path
    that ``called``'s path continues at a ``/``: the same scheme, host and port, never a
    look-alike host that merely starts with the same text (``https://tools.example``
    does not enclose ``https://tools.example.evil.net/mcp``)."""
    try:
        outer, inner = urlsplit(named), urlsplit(called)
        same_origin = (outer.scheme, outer.hostname, outer.port) == (
            inner.scheme,
            inner.hostname,
            inner.port,
        )
    except ValueError:
        return False
    if not same_origin or not outer.hostname or outer.query or outer.fragment:
        return False
    base = outer.path.rstrip("/")
    return inner.path == outer.path or inner.path.startswith(base + "/") or not base


def discover_flow(
    resource: str, *, metadata_url: str | None = None, insecure_http: bool | None = None
) -> Generator[httpx.Request, httpx.Response, ProtectedResource]:
    """Fetch and check the metadata of ``resource`` and of its authorization servers.

    ``metadata_url`` is the one a ``WWW-Authenticate`` answer named (then the document's
    ``resource`` must equal ``resource``, the URL that was called, or its origin-and-path
    prefix, RFC 9728 section 3.3); by default the well-known URL built from ``resource``.
    An authorization server whose document does not name the issuer its URL was built
    from is left out (RFC 8414 section 3.3).

    An authorization server named by a URL that is malformed (or has a query), not over
    https (or http to loopback), or whose token endpoint is either, is left out.

    The resource's document, which chooses those servers, is read over https, or http to
    loopback; from any other ``http://`` URL only with ``insecure_http`` (None: as
    ``TASKLEASE_INSECURE_HTTP`` says), announced once per server by an
    ``InsecureHTTPWarning`` (``rules.cleartext``).

    Raises:
        TaskleaseError: (``bad_metadata``) the resource's document is missing or names
            another resource, or ``metadata_url`` (which a resource server's
            ``WWW-Authenticate`` names) is not an http(s) URL.
        InsecureHTTP: the document's URL is plain HTTP beyond loopback without the
            opt-in; nothing was fetched.
    """
    if metadata_url is not None and not _http_url(metadata_url):
        raise TaskleaseError(
            f"the metadata URL {metadata_url[:200]!r} is not an http(s) URL",
            code="bad_metadata",
        )
    url = metadata_url or well_known_url(resource, "oauth-protected-resource")
    check_request_url(url, insecure_http, what=METADATA, named="resource metadata URL")
    document = expect_json((yield _get(url)))
    named = document.get("resource")
    if not isinstance(named, str) or not (
        named == resource or (metadata_url is not None and _encloses(named, resource))
    ):
        raise TaskleaseError(
            f"the metadata at {url} is for another resource ({str(named)[:200]})",
            code="bad_metadata",
        )
    servers: list[AuthorizationServer] = []
    named_servers = _strings(document.get("authorization_servers"))
    # The resource's document chooses where the SDK goes next: only the first few, each
    # over https (or http to loopback), where credentials may follow.
    for issuer in [s for s in named_servers if _safe(s)][:MAX_AUTHORIZATION_SERVERS]:
        try:
            server_metadata = well_known_url(issuer, "oauth-authorization-server")
        except InvalidRequest:  # an issuer with a query or fragment: none (RFC 8414 2)
            continue
        answer = yield _get(server_metadata)
        if answer.status_code != 200:
            continue
        try:
            meta = expect_json(answer)
        except TaskleaseError:
            continue
        endpoint = meta.get("token_endpoint")
        if meta.get("issuer") != issuer or not isinstance(endpoint, str) or not _safe(endpoint):
            continue
        servers.append(AuthorizationServer(issuer, endpoint, meta))
    return ProtectedResource(
        resource=named,
        scopes_supported=_strings(document.get("scopes_supported")),
        authorization_servers=tuple(servers),
        metadata=document,
    )
