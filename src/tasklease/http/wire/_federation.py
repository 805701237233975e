"""Federation on the wire: this broker's trust bundle, and the federated trust domains
operators declare."""

from __future__ import annotations

from typing import Annotated, Any

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.records import FederationRecord
from tasklease.http.wire._base import (
    PUBLIC,
    Body,
    Failure,
    Operation,
    Param,
    Request,
    Response,
    Timestamp,
    admin,
    doc,
    multiline,
    required,
)
from tasklease.rules.bundle import TrustBundle

__all__ = [
    "OPERATIONS",
    "TAGS",
    "Federation",
    "FederationAdded",
    "FederationCreateRequest",
    "FederationList",
    "RemovedFederation",
    "federation_view",
]

TAGS = {
    "federation": "Federation between brokers: this broker's SPIFFE trust bundle, and the "
    "other trust domains it trusts (docs/federation.md).",
}

# Declaring whom to trust is managing trust anchors, as signing keys are.
_SCOPE = "admin:keys:*"
_Text = str | None


class FederationCreateRequest(Request):
    trust_domain: Annotated[
        _Text,
        required(
            "The other broker's SPIFFE trust domain (lowercase a-z, 0-9, `.`, `-`, `_`); "
            "never this broker's own. Declaring it again replaces its record."
        ),
    ] = None
    bundle_endpoint_url: Annotated[
        _Text,
        doc(
            "Its bundle endpoint (SPIFFE Federation `https_web`): an `https` URL without "
            "userinfo or fragment, such as `https://b.example/v1/federation/bundle`. "
            "Exactly one of this and `bundle`."
        ),
    ] = None
    bundle: Annotated[
        _Text,
        multiline(
            "A static SPIFFE bundle (its JSON text), trusted from now until it is replaced: "
            "for a domain without a reachable endpoint. Exactly one of this and "
            "`bundle_endpoint_url`."
        ),
    ] = None
    ca_pem: Annotated[
        _Text,
        multiline(
            "PEM certificates the endpoint's server certificate must chain to; absent: the "
            "system's trust store. The certificate must name the URL's host. Only the "
            "certificates count: text outside the PEM blocks (a comment) is ignored."
        ),
    ] = None
    max_bundle_age: Annotated[
        int | None,
        doc(
            "Seconds a fetched bundle stays trusted without a successful refresh; beyond, "
            "the domain's credentials are refused. Default 3600.",
            minimum=1,
        ),
    ] = None
    scope_map: Annotated[
        list[list[str]] | None,
        doc(
            "`[foreign_scope, local_scope]` pairs: which of the domain's scopes map to which "
            "of ours (`*` as a scope's identifier covers any). Default none.",
            items={"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string"}},
        ),
    ] = None
    scope_ceiling: Annotated[
        list[str] | None,
        doc("Local scopes that bound whatever a credential from the domain maps to."),
    ] = None
    max_ttl: Annotated[
        int | None,
        doc(
            "The longest lifetime, in seconds, of a token minted here from the domain's "
            "credentials. Default and most: the broker's `max_ttl`.",
            minimum=1,
        ),
    ] = None
    revocation_feed: Annotated[
        _Text,
        doc(
            "The other broker's base URL (`https`, its tenant's for a tenant, e.g. "
            "`https://a.example:8443`): its revocation feed is followed and every revocation "
            "there ends what this broker derived from the domain's tokens. With "
            "`feed_credentials_file`."
        ),
    ] = None
    feed_credentials_file: Annotated[
        _Text,
        doc(
            "The name of a 0600 JSON file, on this broker's host in `<data_dir>/federation/` "
            "(`<data_dir>/federation/tenants/<name>/` for a tenant), with the `client_id` and "
            "`client_secret` of the app the other broker's operator made for this one (to "
            "read its feed). Only the name is stored; it is read when the feed is followed."
        ),
    ] = None


class Federation(Response):
    trust_domain: Annotated[str, doc("The federated trust domain.")]
    bundle_endpoint_url: Annotated[str | None, doc("Its bundle endpoint; null when static.")]
    static: Annotated[bool, doc("Whether the bundle was given rather than fetched.")]
    ca: Annotated[
        str,
        doc("What the endpoint's certificate is checked against.", enum=["pem", "system"]),
    ]
    max_bundle_age: Annotated[int, doc("Seconds a fetched bundle stays trusted.")]
    scope_map: Annotated[list[list[str]], doc("`[foreign_scope, local_scope]` pairs.")]
    scope_ceiling: Annotated[list[str], doc("The local scope ceiling.")]
    max_ttl: Annotated[int, doc("Longest lifetime of a token minted from its credentials.")]
    status: Annotated[
        str,
        doc(
            "`trusted`: its bundle is usable; `pending`: no bundle fetched yet; `expired`: "
            "the last good bundle is older than `max_bundle_age` (credentials refused).",
            enum=["trusted", "pending", "expired"],
        ),
    ]
    sequence: Annotated[int | None, doc("The last good bundle's `spiffe_sequence`.")]
    refresh_hint: Annotated[int | None, doc("Its `spiffe_refresh_hint`, in seconds.")]
    kids: Annotated[list[str], doc("The key ids it trusts (Ed25519 `jwt-svid` keys).")]
    fetched_at: Annotated[str | None, doc("When it was fetched or given (RFC 3339).")]
    checked_at: Annotated[str | None, doc("The latest fetch attempt (RFC 3339).")]
    last_error: Annotated[str, doc('Why the latest attempt failed; "" when it did not.')]
    created_at: Timestamp
    created_by: Annotated[str, doc("Who declared it.")]
    revocation_feed: Annotated[
        str | None, doc("The base URL whose revocation feed is followed; null when none.")
    ]
    feed_heard_at: Annotated[
        str | None,
        doc(
            "When its revocation feed was last heard current (RFC 3339); null when it has "
            "none or it was never heard. Older than `federation_feed_max_staleness`, and "
            "the domain's tokens are not exchanged (503)."
        ),
    ]


class FederationAdded(Federation):
    replaced: Annotated[bool, doc("Whether an earlier declaration was replaced.")]


class FederationList(Response):
    federations: list[Federation]
    total: int


class RemovedFederation(Response):
    trust_domain: Annotated[str, doc("The trust domain no longer trusted.")]
    removed: Annotated[bool, doc("Always true.")]


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339_seconds(value)


def federation_view(
    record: FederationRecord, bundle: TrustBundle | None, now: float, feed_heard: float | None
) -> dict[str, Any]:
    """The fields of :class:`Federation` for ``record`` with its parsed last good bundle
    and when its revocation feed was last heard current."""
    if bundle is None or record.fetched_at is None:
        status = "pending"
    elif not record.static and now - record.fetched_at > record.max_bundle_age:
        status = "expired"
    else:
        status = "trusted"
    return {
        "trust_domain": record.trust_domain,
        "bundle_endpoint_url": record.bundle_endpoint_url or None,
        "static": record.static,
        "ca": "pem" if record.ca_pem else "system",
        "max_bundle_age": record.max_bundle_age,
        "scope_map": [list(pair) for pair in record.scope_map],
        "scope_ceiling": list(record.scope_ceiling),
        "max_ttl": record.max_ttl,
        "status": status,
        "sequence": None if bundle is None else bundle.sequence,
        "refresh_hint": None if bundle is None else bundle.refresh_hint,
        "kids": [] if bundle is None else list(bundle.keys),
        "fetched_at": _time(record.fetched_at),
        "checked_at": _time(record.checked_at),
        "last_error": record.last_error,
        "created_at": format_rfc3339_seconds(record.created_at),
        "created_by": record.created_by,
        "revocation_feed": record.revocation_feed or None,
        "feed_heard_at": _time(feed_heard) if record.revocation_feed else None,
    }


_DOMAIN = Param("trust_domain", "path", {"type": "string"}, "The federated trust domain.", True)
_NOT_FEDERATED = Failure("not_found", "this trust domain is not federated")

_JWK_SCHEMA = {
    "type": "object",
    "required": ["kty", "crv", "x", "kid", "use"],
    "properties": {
        "kty": {"const": "OKP"},
        "crv": {"const": "Ed25519"},
        "x": {"type": "string", "description": "The public key, base64url."},
        "kid": {"type": "string", "description": "Key id (RFC 7638 thumbprint)."},
        "use": {"const": "jwt-svid"},
        "alg": {"const": "EdDSA"},
    },
}

OPERATIONS = (
    Operation(
        "GET /v1/federation/bundle",
        "getTrustBundle",
        "federation",
        "This broker's SPIFFE trust bundle",
        "The keys that verify this broker's tokens (those of the JWKS: the active key and "
        "the ones not yet retired) as a SPIFFE bundle, the bundle endpoint of the SPIFFE "
        "Federation `https_web` profile. `spiffe_sequence` grows on every change of the "
        "keys and never goes back; `spiffe_refresh_hint` is the broker's "
        "`federation_refresh_hint`. No authentication, as the profile requires. Each "
        "tenant serves its own at `/t/<name>/v1/federation/bundle`.",
        PUBLIC,
        Body(
            "SpiffeBundle",
            "application/json",
            {
                "type": "object",
                "required": ["keys"],
                "properties": {
                    "keys": {"type": "array", "items": _JWK_SCHEMA},
                    "spiffe_refresh_hint": {"type": "integer", "minimum": 1},
                    "spiffe_sequence": {"type": "integer", "minimum": 1},
                },
            },
        ),
    ),
    Operation(
        "POST /v1/admin/federations",
        "addFederation",
        "federation",
        "Federate with a trust domain",
        "Declares another broker's trust domain: where its bundle comes from, how old it "
        "may grow, and the policy for its credentials. Declaring a domain again replaces "
        "its record (`replaced`; the last good bundle is kept when the endpoint stays the "
        "same; a static bundle is read anew). An endpoint's bundle is fetched before the "
        "answer (its outcome is in `status` and `last_error`), then on its refresh hint. "
        "Needs `admin:keys:*`.",
        admin(_SCOPE),
        FederationAdded,
        status=201,
        request=FederationCreateRequest,
        commits=True,
        errors=(
            Failure(
                "invalid_request",
                "a malformed trust domain, this broker's own, neither or both of "
                "`bundle_endpoint_url` and `bundle`, an endpoint that is not `https` or "
                "carries userinfo, a static bundle that does not parse, `ca_pem` that holds "
                "no PEM certificate a TLS client can trust, or a malformed scope, age or TTL",
            ),
            Failure(
                "conflict",
                "the domain was removed and its removal still stands (it ends what was "
                "derived from the domain until the time the problem names)",
            ),
        ),
    ),
    Operation(
        "GET /v1/admin/federations",
        "listFederations",
        "federation",
        "List federated trust domains",
        "Every federated trust domain by name, with its bundle's state.",
        admin(_SCOPE),
        FederationList,
    ),
    Operation(
        "GET /v1/admin/federations/{trust_domain}",
        "getFederation",
        "federation",
        "Show a federated trust domain",
        "One federated trust domain, with its bundle's state and last error.",
        admin(_SCOPE),
        Federation,
        parameters=(_DOMAIN,),
        errors=(_NOT_FEDERATED,),
    ),
    Operation(
        "DELETE /v1/admin/federations/{trust_domain}",
        "removeFederation",
        "federation",
        "Stop federating with a trust domain",
        "Removes the record: from now on the domain's credentials are refused, and "
        "everything derived here from them is revoked (level `chain` on `fed:<domain>`).",
        admin(_SCOPE),
        RemovedFederation,
        parameters=(_DOMAIN,),
        commits=True,
        errors=(_NOT_FEDERATED,),
    ),
)
