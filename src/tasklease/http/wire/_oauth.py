"""OAuth discovery on the wire: the authorization server metadata (RFC 8414) that OAuth and
MCP clients read to find the token endpoint, the keys and what the broker supports."""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, UnsetType

from tasklease.http.wire._base import PUBLIC, Failure, Operation, Param, Response, doc

__all__ = ["OPERATIONS", "TAGS", "AuthorizationServerMetadata"]

TAGS = {
    "discovery": "RFC 8414 authorization server metadata: where a standard OAuth or MCP "
    "client finds the token endpoint, the keys and what this broker supports.",
}

_Urls = list[str]


class AuthorizationServerMetadata(Response):
    """RFC 8414 section 2. Every "supported" list is stated, never left to its default
    (which would claim the authorization code and implicit grants)."""

    issuer: Annotated[
        str,
        doc(
            "The `iss` of this broker's (or tenant's) tokens. A client that built the "
            "metadata URL from an issuer discards the document unless this equals it (RFC "
            "8414 section 3.3): set `public_url` (or `issuer`) to the URL clients reach."
        ),
    ]
    token_endpoint: Annotated[str, doc("`POST /v1/oauth/token`.", format="uri")]
    jwks_uri: Annotated[str, doc("`GET /.well-known/jwks.json`.", format="uri")]
    introspection_endpoint: Annotated[str, doc("`POST /v1/introspect`.", format="uri")]
    revocation_endpoint: Annotated[str, doc("`POST /v1/token/revoke`.", format="uri")]
    grant_types_supported: Annotated[
        list[str],
        doc("`client_credentials` (apps) and RFC 8693 token exchange (agents)."),
    ]
    response_types_supported: Annotated[
        list[str],
        doc(
            '`["none"]`: there is no authorization endpoint (no grant here goes through a '
            "browser), and the field is required (RFC 8414 section 2)."
        ),
    ]
    token_endpoint_auth_methods_supported: Annotated[
        list[str],
        doc(
            "`client_secret_basic`, `client_secret_post` and `private_key_jwt` (RFC 7523, for "
            "an app that registered a public key) for apps (client credentials); `none` for "
            "token exchange, where the tokens in the request are the credentials."
        ),
    ]
    introspection_endpoint_auth_methods_supported: Annotated[
        list[str],
        doc(
            "`Bearer` and `DPoP`: the introspection endpoint takes an app or operator "
            "token, not client credentials (RFC 7662 section 2.1; RFC 8414 section 2 lets "
            "this list name OAuth access token types). Absent, a client would assume "
            "`client_secret_basic`, which is refused."
        ),
    ]
    revocation_endpoint_auth_methods_supported: Annotated[
        list[str],
        doc(
            "`Bearer` and `DPoP`: the revocation endpoint takes an agent token of the "
            "token's own agent, not client credentials (as for introspection)."
        ),
    ]
    token_endpoint_auth_signing_alg_values_supported: Annotated[
        list[str],
        doc(
            "The `alg` of `private_key_jwt` assertions: `EdDSA` (RFC 8037) and `Ed25519` "
            "(RFC 9864), both Ed25519 signatures."
        ),
    ]
    dpop_signing_alg_values_supported: Annotated[
        list[str], doc("RFC 9449 section 5.1: `EdDSA` (Ed25519) only.")
    ]
    scopes_supported: Annotated[
        list[str],
        doc(
            "The scope patterns (`action:resource:identifier`, `*` as the identifier); the "
            "scopes themselves are chosen per app and launch token."
        ),
    ]
    authorization_details_types_supported: Annotated[
        list[str],
        doc(
            "RFC 9396 section 10: the built-in structured grant types (`scope`, "
            "`resource_access`); a tenant's operators may add their own (docs/grants.md)."
        ),
    ]
    tls_client_certificate_bound_access_tokens: Annotated[
        bool, doc("RFC 8705 section 3.3: true when the broker serves mTLS.")
    ] = False
    service_documentation: (
        Annotated[str, doc("The broker's API documentation.", format="uri")] | UnsetType
    ) = UNSET


_TENANT = Param(
    "tenant",
    "path",
    {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"},
    "The tenant's name.",
    required=True,
)
_WHAT = (
    "The issuer, the token, introspection and revocation endpoints and the JWKS URI, the "
    "grant types (`client_credentials`, token exchange), client authentication methods and "
    "DPoP algorithms. Each tenant serves its own under `/t/<name>/`; for a tenant whose "
    "issuer is a URL with a path, RFC 8414 section 3.1 puts the document at the host's "
    "root with the path appended, which is also served. Cacheable for 5 minutes."
)

OPERATIONS = (
    Operation(
        "GET /.well-known/oauth-authorization-server",
        "getAuthorizationServerMetadata",
        "discovery",
        "OAuth authorization server metadata (RFC 8414)",
        _WHAT,
        PUBLIC,
        AuthorizationServerMetadata,
    ),
    Operation(
        "GET /.well-known/openid-configuration",
        "getOpenIdConfiguration",
        "discovery",
        "The same metadata at the OpenID Connect discovery path",
        "For clients that only look there (RFC 8414 section 5). tasklease is not an OpenID "
        "provider: it issues no ID tokens.",
        PUBLIC,
        AuthorizationServerMetadata,
    ),
    Operation(
        "GET /.well-known/oauth-authorization-server/t/{tenant}",
        "getTenantAuthorizationServerMetadata",
        "discovery",
        "A tenant's metadata at its RFC 8414 section 3.1 location",
        "The metadata of tenant `{tenant}`, whose issuer is the default tenant's + "
        "`/t/{tenant}`: where a client that inserts the well-known path before the issuer's "
        "path looks.",
        PUBLIC,
        AuthorizationServerMetadata,
        parameters=(_TENANT,),
        errors=(Failure("not_found", "no such tenant"),),
    ),
    Operation(
        "GET /.well-known/openid-configuration/t/{tenant}",
        "getTenantOpenIdConfiguration",
        "discovery",
        "A tenant's metadata at the path-inserted OpenID location",
        "As the tenant's RFC 8414 location (RFC 8414 section 5).",
        PUBLIC,
        AuthorizationServerMetadata,
        parameters=(_TENANT,),
        errors=(Failure("not_found", "no such tenant"),),
    ),
)
