"""OAuth discovery: the authorization server metadata (RFC 8414) each tenant serves.

A tenant serves its document at ``/.well-known/oauth-authorization-server`` (and the
OpenID Connect alias) under its own base path, so the default tenant at the root and
tenant ``acme`` under ``/t/acme/``. A tenant's issuer is the default one + ``/t/acme``;
RFC 8414 section 3.1 tells clients to look for an issuer with a path at the host's root
with the path appended (``/.well-known/oauth-authorization-server/t/acme``), so the root
serves those too (:func:`inserted_metadata_routes`). Every document names the issuer of
the tenant's tokens, which a client compares with the one it started from (section 3.3).

URLs in the document are the issuer's when it is an http(s) URL (``public_url`` or
``issuer`` set), so they agree with it; otherwise the request's own origin (one of the
broker's, never the ``Host`` header: ``RequestURI``) and the tenant's base path.
"""

from __future__ import annotations

import functools

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.tenants import DEFAULT_TENANT, TENANT_PATH_PREFIX
from tasklease.http import wire
from tasklease.http._handling import guard, http_error, json_response, request_id
from tasklease.http.token_routes import RequestURI
from tasklease.rules import jws
from tasklease.rules.grants import BUILTIN_TYPES
from tasklease.tenancy import Tenancy

__all__ = [
    "GRANT_TYPES",
    "METADATA_PATHS",
    "authorization_server_metadata",
    "inserted_metadata_routes",
    "metadata_routes",
]

METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
GRANT_TYPES = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
# RFC 8414 section 2: the introspection and revocation endpoints' methods may be OAuth
# access token types; both take a token (an app's or operator's; an agent's) in
# Authorization, by either scheme, and no client credentials.
_TOKEN_AUTH_METHODS = ["Bearer", "DPoP"]
_SCOPE_PATTERNS = ["<action>:<resource>:<identifier>", "<action>:<resource>:*"]
_CACHE = "public, max-age=300"


def _is_url(issuer: str) -> bool:
    return issuer.startswith(("https://", "http://"))


def authorization_server_metadata(config: Config, base: str) -> wire.AuthorizationServerMetadata:
    """The RFC 8414 document of a broker whose endpoints are under ``base`` (no ``/`` at
    its end)."""
    return wire.AuthorizationServerMetadata(
        issuer=config.issuer,
        token_endpoint=f"{base}/v1/oauth/token",
        jwks_uri=f"{base}/.well-known/jwks.json",
        introspection_endpoint=f"{base}/v1/introspect",
        revocation_endpoint=f"{base}/v1/token/revoke",
        grant_types_supported=list(GRANT_TYPES),
        response_types_supported=["none"],
        token_endpoint_auth_methods_supported=list(_AUTH_METHODS),
        introspection_endpoint_auth_methods_supported=list(_TOKEN_AUTH_METHODS),
        revocation_endpoint_auth_methods_supported=list(_TOKEN_AUTH_METHODS),
        token_endpoint_auth_signing_alg_values_supported=list(jws.KNOWN_KEY_ALGORITHMS),
        dpop_signing_alg_values_supported=["EdDSA"],
        scopes_supported=list(_SCOPE_PATTERNS),
        authorization_details_types_supported=list(BUILTIN_TYPES),
        tls_client_certificate_bound_access_tokens=config.tls_mode == "mtls",
        service_documentation=f"{base}/v1/openapi.json",
    )


def _base(config: Config, uri: RequestURI, request: Request, tenant_path: str) -> str:
    """Where the tenant's endpoints are: its issuer when that is a URL, else this
    connection's origin (one of ours) and the tenant's base path."""
    if _is_url(config.issuer):
        return config.issuer.rstrip("/")
    origins = uri.origins(request.scope)
    return (origins[0] if origins else "") + tenant_path


def _answer(document: wire.AuthorizationServerMetadata) -> Response:
    response = json_response(document)
    response.headers["cache-control"] = _CACHE
    return response


def metadata_routes(broker: Broker) -> list[Route]:
    """The metadata routes a tenant serves under its own base path."""
    cfg = broker.config
    uri = RequestURI(cfg)

    async def metadata(request: Request) -> Response:
        # The mount's path (/t/<name>) for a tenant; "" at the root.
        tenant_path = str(request.scope.get("root_path", ""))
        return _answer(authorization_server_metadata(cfg, _base(cfg, uri, request, tenant_path)))

    return [Route(path, guard(metadata), methods=["GET"]) for path in METADATA_PATHS]


def inserted_metadata_routes(tenancy: Tenancy, *, uri: RequestURI) -> list[Route]:
    """The tenants' metadata where RFC 8414 section 3.1 puts it for an issuer with a
    path: ``/.well-known/oauth-authorization-server/t/<name>`` (and the OpenID alias)."""
    local = tenancy.default.store.local_reads
    lookup = tenancy.broker

    async def metadata(request: Request) -> Response:
        name = request.path_params["tenant"]
        broker = None
        if name != DEFAULT_TENANT:
            find = functools.partial(lookup, request_id=request_id(request))
            broker = find(name) if local else await run_in_threadpool(find, name)
        if broker is None:
            return await http_error(request, HTTPException(404))
        cfg = broker.config
        tenant_path = f"{TENANT_PATH_PREFIX}{name}"
        return _answer(authorization_server_metadata(cfg, _base(cfg, uri, request, tenant_path)))

    return [
        Route(f"{path}{TENANT_PATH_PREFIX}{{tenant}}", guard(metadata), methods=["GET"])
        for path in METADATA_PATHS
    ]
